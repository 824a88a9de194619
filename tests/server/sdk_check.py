"""sdk_check.py — what the SDK test scripts of tests/server share: one printed line per check, the counts,
and the closing `N passed, N failed` line that tests/cli/test_serve.sh reads."""
import sys

passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name} {detail}"[:2000], flush=True)


def guarded(fn):
    """Runs one group of checks; an exception is one failure, not the end of the run."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - any failure of a group is reported and the run goes on
        check(fn.__name__, False, f"raised {type(e).__name__}: {e}")


def finish():
    """Prints the closing line and exits 1 when a check failed."""
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
