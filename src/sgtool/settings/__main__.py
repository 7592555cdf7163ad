"""`python -m sgtool.settings [--check]`: write (or check) configs/<command>.yaml from the settings models."""

import sys

from . import COMMAND_SETTINGS
from .base import config_path, defaults_yaml


def main(check: bool) -> int:
    stale = []
    for command, model in COMMAND_SETTINGS.items():
        path = config_path(command)
        text = defaults_yaml(model, f"Defaults of `sgtool {command}`.")
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    for path in stale:
        print(f"{path} differs from its settings model; run `python -m sgtool.settings`", file=sys.stderr)
    return 1 if stale else 0


sys.exit(main("--check" in sys.argv[1:]))
