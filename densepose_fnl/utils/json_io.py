"""Reading a JSON input file: one error, naming the file and the line / column, for every way it can be
broken (absent, not UTF-8, not JSON)."""
import json
import os
from typing import Any, Union


class MalformedFileError(ValueError):
    """An input file that cannot be read as what it should be; the message names the file and where."""


def read_json(path: Union[str, os.PathLike], what: str) -> Any:
    """The parsed JSON of `path` (`what` names it in errors: "annotation file", "results file")."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise MalformedFileError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise MalformedFileError(f"{path}: {what} is not valid JSON: {e.msg} at line {e.lineno} column "
                                 f"{e.colno} (char {e.pos})") from None
    except UnicodeDecodeError as e:
        raise MalformedFileError(f"{path}: {what} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise MalformedFileError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
