"""The house rules of src/ and include/ that a compiler does not check (unit_code_rules):

- no function longer than 60 lines (from its signature to its closing brace) or with more than 6
  parameters;
- <mpi.h> (or comm_mpi.h, the one header that includes it) included only by the modules that call
  MPI (comm, reducer, dataset for MPI-IO, check for MPI's error strings, and the sanitizer
  build's keeper of MPI's plugins), so no other module sees it;
- the modules form a stack: no cycle in the includes between headers of include/dptrain.
Prints every breach, one line each, and exits 1 if there is one."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_LINES, MAX_PARAMS = 60, 6
MPI_MODULES = {"src/comm.c", "src/reducer.c", "src/dataset.c", "src/check.c", "src/asan_keep_modules.c"}


def sources():
    for folder in ("src", "include/dptrain"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith((".c", ".h")):
                yield f"{folder}/{name}"


def functions(text):
    """(name, first line, lines, parameters) of each function defined at the left margin."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if re.match(r"[A-Za-z_][\w \*]*\b(\w+)\(", lines[i]) and not lines[i].rstrip().endswith(";") \
                and not lines[i].startswith(("typedef", "struct", "enum", "#")):
            start = i
            while i < len(lines) and lines[i] != "{" and not lines[i].rstrip().endswith((";", "{")):
                i += 1
            if i < len(lines) and (lines[i] == "{" or (lines[i].rstrip().endswith("{") and "=" not in lines[i])):
                signature = " ".join(lines[start:i + 1])
                name = re.match(r"[A-Za-z_][\w \*]*\b(\w+)\(", lines[start]).group(1)
                end = i
                while end < len(lines) and lines[end] != "}":
                    end += 1
                yield name, start + 1, end - start + 1, parameters(signature)
                i = end
        i += 1


def parameters(signature):
    inside = signature[signature.index("(") + 1:signature.rindex(")")]
    depth, count = 0, 0 if inside.strip() in ("", "void") else 1
    for ch in inside:
        depth += ch == "("
        depth -= ch == ")"
        count += ch == "," and depth == 0
    return count


def main():
    breaches, includes = [], {}
    for path in sources():
        text = open(os.path.join(ROOT, path), encoding="utf-8").read()
        sees_mpi = re.search(r'#include (<mpi\.h>|"dptrain/comm_mpi\.h")', text)
        if sees_mpi and path not in MPI_MODULES | {"include/dptrain/comm_mpi.h"}:
            breaches.append(f"{path}: includes mpi.h or comm_mpi.h, but only {', '.join(sorted(MPI_MODULES))} may")
        if path.endswith(".c"):
            for name, line, length, params in functions(text):
                if length > MAX_LINES:
                    breaches.append(f"{path}:{line}: {name} has {length} lines (at most {MAX_LINES})")
                if params > MAX_PARAMS:
                    breaches.append(f"{path}:{line}: {name} has {params} parameters (at most {MAX_PARAMS})")
        else:
            includes[os.path.basename(path)] = re.findall(r'#include "dptrain/(\w+\.h)"', text)
    breaches += cycles(includes)
    for b in breaches:
        print(b)
    print(f"code rules: {len(breaches)} breaches")
    sys.exit(1 if breaches else 0)


def cycles(includes):
    found, state = [], {}

    def visit(h, path):
        state[h] = 1
        for d in includes.get(h, []):
            if state.get(d) == 1:
                found.append("include cycle: " + " -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[h] = 2
    for h in includes:
        if h not in state:
            visit(h, [h])
    return found


if __name__ == "__main__":
    main()
