"""The one exception type that command-line entry points turn into a one-line message."""

import functools
import sys


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and what to do."""


def exit_on_user_error(main):
    """Run `main`; a UserError (or a missing file) becomes one line `error: ...` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (UserError, FileNotFoundError) as error:
            print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
            sys.exit(2)

    return wrapped
