"""Small file helpers shared by every writer: a crash never leaves a half-written JSON file behind."""
import json
import os


def write_json(path, obj, lines=False):
    """Write ``obj`` as JSON (or, with ``lines``, one JSON object per line) atomically: temp file, then rename."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        if lines:
            f.writelines(json.dumps(row) + "\n" for row in obj)
        else:
            json.dump(obj, f, indent=2)
    os.replace(tmp, path)
