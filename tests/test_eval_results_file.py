"""A malformed annotation or results file given to tools/evaluate_results.py is one line naming the file and
the position (exit 2), never a traceback."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from densepose_fnl.evaluation.results_file import MalformedFileError, read_annotations, read_results
from densepose_fnl.evaluation.synthetic_mesh import coco_dataset, densepose_annotation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path):
    gt = coco_dataset([{"id": 1, "width": 100, "height": 100, "file_name": "1.jpg"}],
                      [densepose_annotation(1, 1, [10.0, 10.0, 50.0, 60.0], None)])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 60],
                                                    "score": 0.9}]))
    return tmp_path


@pytest.mark.parametrize("which, text, message", [
    ("gt", '{"images": [\n  {"id": 1,', "gt.json: annotation file is not valid JSON: Expecting property name "
                                        "enclosed in double quotes at line 2 column 12"),
    ("res", '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},]',
     "res.json: results file is not valid JSON: Expecting value at line 1 column 72"),
    ("res", '{"image_id": 1}', "res.json: results file must hold a list of detections, found a dict"),
    ("res", '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]',
     "res.json: results[0] lacks one of image_id, category_id, bbox, score"),
    ("gt", '{"images": [], "annotations": []}', "gt.json lacks the COCO list(s) ['categories']"),
])
def test_malformed_file_is_one_line_naming_file_and_position(files, which, text, message):
    (files / f"{which}.json").write_text(text)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_results.py"), "--gt", str(files / "gt.json"),
                           "--results", str(files / "res.json"), "--no-densepose"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("evaluate_results.py: error: ") and message in line, line


def test_well_formed_files_are_read(files):
    assert read_annotations(files / "gt.json")["annotations"][0]["image_id"] == 1
    assert read_results(files / "res.json")[0]["score"] == 0.9
    with pytest.raises(MalformedFileError, match="nowhere.json: results file not found"):
        read_results(files / "nowhere.json")
