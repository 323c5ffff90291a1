# The C module (_termtext.c), built where a compiler is: see capture/termtext.py.
from collections.abc import Sequence
from typing import overload

def text(raw: bytes, program: str) -> str: ...
def text_parts(raw: bytes, program: str) -> tuple[str, str]: ...
@overload
def scan_words(
    text: str, words: Sequence[bytes], token_chars: bytes, run: int
) -> tuple[bytes, list[list[int]], list[int]]: ...
@overload
def scan_words(
    text: str, words: Sequence[bytes], token_chars: bytes, run: int, checks: bytes
) -> tuple[bytes, list[list[int]], list[int], list[list[int]]]: ...
