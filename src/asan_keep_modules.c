/* Sanitizer build only (DPTRAIN_SANITIZE): Open MPI dlclose()s its plugins at MPI_Finalize,
 * before LeakSanitizer runs, so their allocations show as "<unknown module>" and no
 * suppression can name them. Keeping every module mapped lets tests/lsan.supp suppress Open
 * MPI's own exit-time allocations by library name while dptrain's leaks are still reported. */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
