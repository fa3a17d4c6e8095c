"""Pure helpers over a parsed ``email.message.Message`` (compat32): no I/O, no network.

- :mod:`.parts` -- the decoded text/plain and text/html parts, and the body alternatives
- :mod:`.html` -- visible text and links of an HTML body
- :mod:`.unsubscribe` -- visible unsubscribe link, List-Unsubscribe(-Post) headers
- :mod:`.imprint` -- the registered imprint and whether a body shows it
- :mod:`.addresses` -- mailbox headers, domains, disguised display names
- :mod:`.charset` -- tolerant decoding of mislabelled charsets
- :mod:`.fastparse` -- the compat32 parse of well-formed mail, without the line-by-line parser
- :mod:`.lineends` -- bare CR/LF: is every line end a CRLF?
- :mod:`.returned` -- forgiving helpers over returned mail (bounces, reports) for the feedback
  parsers
"""
