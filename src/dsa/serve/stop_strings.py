"""Stop strings on streamed text: `StopMatcher` cuts at the first one, holding back a tail that may start one."""

from __future__ import annotations


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back a tail that may start one."""

    def __init__(self, stops: list[str]):
        self.stops, self.buf = stops, ""
        self.keep = max((len(s) for s in stops), default=1) - 1

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to show, whether a stop string was hit)."""
        self.buf += text
        hits = [self.buf.find(s) for s in self.stops if s in self.buf]
        if hits:
            out, self.buf = self.buf[:min(hits)], ""
            return out, True
        safe = len(self.buf) - self.keep
        if safe <= 0:
            return "", False
        out, self.buf = self.buf[:safe], self.buf[safe:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out
