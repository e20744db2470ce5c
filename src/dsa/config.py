"""The one config style of dsa's YAML-driven jobs (`dsa guard train`, `dsa align train|eval`): a
pydantic model with every field documented (`Field(description=...)`), read from a YAML file and
`key=value` overrides whose values are parsed as YAML, unknown keys rejected with the known ones
named, and checks that say which field is wrong.

    class MyConfig(Config):
        lr: float = Field(1e-3, description="learning rate", gt=0)

    cfg = MyConfig.from_yaml("configs/my.yaml", ["lr=3e-4"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: Sequence[str] = (),
                  extra: Mapping | None = None):
        """Read YAML (None: the defaults), then `extra` fields, then `key=value` overrides (values
        parsed as YAML), and validate."""
        data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        data.update(extra or {})
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, value = item.split("=", 1)
            data[key.strip()] = yaml.safe_load(value)
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"{path or 'config'}: unknown keys {unknown}; known keys: {sorted(cls.model_fields)}")
        return cls.model_validate(data)

    @classmethod
    def help(cls) -> str:
        """One line per field: its name and description."""
        return "\n".join(f"  {name}: {f.description}" for name, f in cls.model_fields.items())
