"""The one exception type a user may see: its message is one clear sentence, shown as is (no stack trace)."""


class DarwinError(Exception):
    """Bad input or an unmet precondition the user can fix; str(e) is the sentence to show."""
