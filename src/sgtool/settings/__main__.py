"""`python -m sgtool.settings [--check]`: write (or check) configs/<command>.yaml from the settings models."""

import sys

from .base import CONFIG_DIR, defaults_yaml
from .commands import COMMAND_SETTINGS


def main(check: bool) -> int:
    stale = []
    for command, model in COMMAND_SETTINGS.items():
        path = CONFIG_DIR / f"{command}.yaml"
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
