"""Error messages without the row text they quote.

A model's exception may quote its input (``cannot embed 'my password is ...'``), and the
worker stores a parked row's error in ``embeddb.pending.last_error``, shows it in ``status``
and logs it. :func:`describe_failure` keeps the exception's type and a bounded message with
every occurrence of the text, and every long fragment of it, replaced by ``[row text]``.
"""

from __future__ import annotations

#: A fragment of the row text this long or longer found in a message is removed; shorter
#: ones are too likely to be ordinary words of the message itself.
MIN_FRAGMENT = 10
#: The longest message stored, after scrubbing.
MAX_MESSAGE = 500
_PLACEHOLDER = "[row text]"


def describe_failure(exc: BaseException, text: str) -> str:
    """``"ValueError: cannot embed [row text]"``: ``exc`` without ``text`` or fragments of it.

    Example::

        >>> describe_failure(ValueError("cannot embed 'hunter2 is my password'"),
        ...                  "hunter2 is my password")
        "ValueError: cannot embed '[row text]'"
    """
    # as written, and as repr() writes it (escaped newlines and quotes)
    # bounded before scrubbing too: a message quoting a whole long text costs no more
    message = scrub(str(exc)[: 4 * MAX_MESSAGE], text, repr(text)[1:-1])
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def scrub(message: str, *texts: str) -> str:
    """``message`` with each of ``texts``, and each fragment of one of :data:`MIN_FRAGMENT` or
    more characters, replaced by ``[row text]``.

    One pass over each text against the message's own fragments, so a long row costs linear
    time, not a search of the whole text per position of the message.
    """
    if not message:
        return message
    # where each fragment of the message starts (messages are short: this stays small)
    starts: dict[str, list[int]] = {}
    for i in range(len(message) - MIN_FRAGMENT + 1):
        starts.setdefault(message[i:i + MIN_FRAGMENT], []).append(i)
    covered = [False] * len(message)
    for text in texts:
        if len(text) < MIN_FRAGMENT:  # a short text: only where it appears whole
            at = message.find(text) if len(text) >= 4 else -1
            while at >= 0:
                covered[at:at + len(text)] = [True] * len(text)
                at = message.find(text, at + 1)
            continue
        for j in range(len(text) - MIN_FRAGMENT + 1):
            for i in starts.pop(text[j:j + MIN_FRAGMENT], ()):  # each fragment once
                covered[i:i + MIN_FRAGMENT] = [True] * MIN_FRAGMENT
    parts: list[str] = []
    for i, char in enumerate(message):
        if not covered[i]:
            parts.append(char)
        elif i == 0 or not covered[i - 1]:
            parts.append(_PLACEHOLDER)
    return "".join(parts)
