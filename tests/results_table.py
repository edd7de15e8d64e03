"""results.md cells as `jaxface.train.writers` documents them, written out independently for the tests."""


def formatted(value):
    """Floats to 4 significant digits (n/a for NaN; thousands separators and no decimals from 10,000 up),
    ints with thousands separators, anything else as str()."""
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
