"""Docs that cannot rot (e2e_docs): README.md and docs/*.md are checked as a user would use them.

1. Every shell block (```sh or ```bash) that calls dptrain or a script of this repository runs, in
   order, in a fresh folder per page that looks like a checkout (build/dptrain, scripts/, jobs/,
   data/), and must exit 0. A block preceded by the line `<!-- not run: REASON -->` is skipped,
   and REASON must say why. What the test changes, so that the suite stays short:
   - data/fashion-mnist.h5 is a subset (12,000 training and 1,000 test images) unless the page
     converts the data itself (then it converts the real set);
   - `--epochs N` becomes `--epochs 1`, and a train or compare without --epochs gets it;
   - `--validation N` becomes `--validation 1000`.
2. Every relative link and image resolves, and every #anchor names a heading of its page.
3. Every flag of `dptrain COMMAND --help` appears in docs/usage.md's flag table, and every flag in
   that table is one that some command's --help lists.
"""
import os
import re
import subprocess
import sys
import tempfile

import h5py

from common import DATA, DPTRAIN, check, fail

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")
COMMANDS = ("convert", "train", "compare", "eval")


def pages():
    names = ["README.md"] + sorted("docs/" + n for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md"))
    return {n: open(os.path.join(REPO, n), encoding="utf-8").read() for n in names}


def shell_blocks(text):
    """(first line number, code, reason it is not run or None) of each ```sh/```bash block."""
    lines, blocks, i = text.split("\n"), [], 0
    while i < len(lines):
        fence = re.match(r"\s*```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not re.match(r"\s*```\s*$", lines[end]):
            end += 1
        if fence.group(1) in ("sh", "bash"):
            marker = NOT_RUN.search(lines[i - 1]) if i > 0 else None
            blocks.append((i + 1, "\n".join(lines[i + 1:end]), marker.group(1) if marker else None))
        i = end + 1
    return blocks


def calls_project(code):
    return re.search(r"(^|[\s/])(dptrain|scripts/|jobs/)", code) is not None


def shorten(code):
    """Few epochs and a small hold-out, applied to each logical line (continuations joined)."""
    code = code.replace("\\\n", " ")
    out = []
    for line in code.split("\n"):
        line = re.sub(r"--epochs[ =]\d+", "--epochs 1", line)
        line = re.sub(r"--validation[ =]\d+", "--validation 1000", line)
        if re.search(r"dptrain (train|compare)\b", line) and "--epochs" not in line:
            line = re.sub(r"dptrain (train|compare)\b", r"dptrain \1 --epochs 1", line, count=1)
        out.append(line)
    return "\n".join(out)


def small_data(path):
    with h5py.File(DATA, "r") as src, h5py.File(path, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for split, n in (("train", 12000), ("test", 1000)):
            for name in ("images", "labels"):
                dst[f"{split}/{name}"] = src[f"{split}/{name}"][:n]


def checkout(folder, converts):
    os.makedirs(os.path.join(folder, "build"))
    os.symlink(DPTRAIN, os.path.join(folder, "build", "dptrain"))
    for name in ("scripts", "jobs"):
        os.symlink(os.path.join(REPO, name), os.path.join(folder, name))
    os.makedirs(os.path.join(folder, "data"))
    if not converts:  # the pages other than the README assume scripts/run.sh has run: results/ exists
        os.makedirs(os.path.join(folder, "results"))
    for name in ("benchmarks.csv", "fashion-mnist-paper-table3.csv"):
        os.symlink(os.path.join(REPO, "data", name), os.path.join(folder, "data", name))
    if not converts:
        small_data(os.path.join(folder, "data", "fashion-mnist.h5"))


def run_blocks(name, text):
    blocks = [b for b in shell_blocks(text) if calls_project(b[1])]
    ran = 0
    with tempfile.TemporaryDirectory(prefix="dptrain-docs-") as folder:
        checkout(folder, any(re.search(r"dptrain convert\b", b[1]) for b in blocks if b[2] is None))
        env = dict(os.environ, PATH=os.path.dirname(DPTRAIN) + ":" + os.environ["PATH"])
        for line, code, reason in blocks:
            if reason is not None:
                check(len(reason) >= 10, f"{name}:{line}: a block marked not run must say why")
                continue
            result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", shorten(code)], cwd=folder, env=env,
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                fail(f"{name}:{line}: the block exited {result.returncode}:\n{code}\n"
                     f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
            ran += 1
    return ran, len(blocks) - ran


def anchors(text):
    """GitHub's anchors of a page's headings."""
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        found.add(slug)
    return found


def check_links(all_pages):
    count = 0
    for name, text in all_pages.items():
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            page = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
            check(os.path.exists(os.path.join(REPO, page)), f"{name}: link {target}: {page} does not exist")
            if anchor:
                check(page in all_pages, f"{name}: link {target}: anchors only into the pages checked here")
                check(anchor in anchors(all_pages[page]), f"{name}: link {target}: {page} has no heading #{anchor}")
            count += 1
    return count


def help_flags():
    flags = set()
    for command in COMMANDS:
        text = subprocess.run([DPTRAIN, command, "--help"], capture_output=True, text=True, check=True).stdout
        flags |= set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", text, re.M))
    return flags


def check_flags(usage):
    table = set()
    for row in re.findall(r"^\| *(`--.*?) *\|", usage, re.M):
        table |= set(re.findall(r"`(--[a-z][a-z0-9-]*)", row))
    helped = help_flags()
    check(len(helped) > 30, f"dptrain --help listed only {sorted(helped)}")
    missing = sorted(helped - table)
    unknown = sorted(table - helped)
    check(not missing, f"docs/usage.md's flag table lacks {missing}, which --help lists")
    check(not unknown, f"docs/usage.md's flag table documents {unknown}, which no --help lists")
    return len(helped)


def main():
    all_pages = pages()
    links = check_links(all_pages)
    flags = check_flags(all_pages["docs/usage.md"])
    only = sys.argv[1:]
    ran = skipped = 0
    for name, text in all_pages.items():
        if only and name not in only:
            continue
        r, s = run_blocks(name, text)
        print(f"{name}: {r} blocks run, {s} marked not run", flush=True)
        ran, skipped = ran + r, skipped + s
    check(ran >= 8, f"only {ran} shell blocks ran")
    print(f"docs: {links} links resolve, {flags} flags match docs/usage.md, {ran} blocks ran, {skipped} not run")


if __name__ == "__main__":
    main()
