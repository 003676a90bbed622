"""Bearer tokens for the service: held as SHA-256 digests, compared in constant time.

A tokens file has one token a line, optionally followed by a space and the comma-separated
clusters it may write (none: any); `#` starts a comment. Write tokens (the API servers) and
read tokens (people and tools querying) come from separate files.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["Token", "TokenSet", "load_tokens"]


@dataclass(frozen=True)
class Token:
    name: str  # where it was defined (file:line): tokens themselves are never shown
    digest: bytes
    clusters: frozenset[str] | None  # None: any cluster

    def allows(self, cluster: str) -> bool:
        return self.clusters is None or cluster in self.clusters


@dataclass(frozen=True)
class TokenSet:
    tokens: tuple[Token, ...]

    def find(self, presented: str) -> Token | None:
        """The token matching `presented`; every token is compared, so the time taken does
        not tell how close a guess was or which token it resembled."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.digest, digest):
                found = token
        return found


def load_tokens(path: Path) -> TokenSet:
    """Read a tokens file; a line that cannot be used stops the service with its number."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the tokens file {path}: {exc.strerror or exc}",
                          hint="give a readable file: one token a line") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        secret, _, rest = line.partition(" ")
        clusters = None
        if rest.strip():
            names = [c.strip() for c in rest.strip().split(",")]
            if any(not c or " " in c for c in names):
                raise ConfigError(f"{path}:{number}: cannot read the clusters after the token",
                                  hint="write `TOKEN cluster-a,cluster-b` (comma-separated, "
                                  "no spaces)")
            clusters = frozenset(names)
        if len(secret) < 16:
            raise ConfigError(f"{path}:{number}: token is too short ({len(secret)} characters)",
                              hint="use at least 16 random characters, e.g. "
                              "`openssl rand -hex 32`")
        tokens.append(Token(f"{path.name}:{number}", hashlib.sha256(secret.encode()).digest(),
                            clusters))
    if not tokens:
        raise ConfigError(f"the tokens file {path} holds no token",
                          hint="one token a line, optionally followed by the clusters it may "
                          "write")
    return TokenSet(tuple(tokens))
