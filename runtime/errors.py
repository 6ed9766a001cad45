"""The one exception family users see: each message says what is wrong and where."""


class DeepclustError(Exception):
    """A problem the user can fix (bad input, bad bundle, bad option).

    The CLI prints its message on one line and exits non-zero; library callers catch it.
    """


class BundleError(DeepclustError):
    """A model bundle is missing, altered, corrupt or of an unsupported format."""


class InputError(DeepclustError):
    """Input data cannot be scored or trained on (shape, dtype, NaN, truncation...)."""
