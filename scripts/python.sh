# Sourced by the shell scripts (POSIX sh): the Python that runs everything is $PYTHON if set, else python3, else
# python, so that a user whose torch lives in another interpreter says which one once (PYTHON=/path/to/python).
if [ -z "${PYTHON:-}" ]; then
    if command -v python3 >/dev/null 2>&1; then PYTHON=python3; else PYTHON=python; fi
fi
