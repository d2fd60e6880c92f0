"""Your own COCO-DensePose JSON, registered without writing Python: DATASETS.REGISTER entries in the config
or `train_net.py --dataset NAME=ANN.json:IMAGES/`; it trains and evaluates from the command line."""
import json
import shutil
import subprocess
import sys

import pytest

from densepose_fnl.config import load_config
from densepose_fnl.data import DatasetCatalog, MetadataCatalog
from densepose_fnl.data.datasets import parse_dataset_spec, register_datasets_from_config

from _train_helpers import REPO, TINY_CONFIG, subprocess_env, tiny_dataset


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """A user's folder: a COCO-DensePose JSON (the synthetic generator's) and its images, under own names."""
    src = tiny_dataset(tmp_path_factory.mktemp("synthetic"))
    own = tmp_path_factory.mktemp("my_people")
    shutil.copytree(f"{src}/train", own / "photos")
    shutil.copy(f"{src}/annotations/densepose_synthetic_train.json", own / "people.json")
    return own


def test_spec_parsing():
    assert parse_dataset_spec("mine=/data/a b/ann.json:/data/imgs/") == ("mine", "/data/a b/ann.json", "/data/imgs/")
    for bad in ("mine", "mine=ann.json", "=ann.json:imgs"):
        with pytest.raises(ValueError, match="expected NAME=ANN.json:IMAGES/"):
            parse_dataset_spec(bad)


def test_config_entries_register_the_dataset(own_data):
    cfg = load_config(TINY_CONFIG, ["DATASETS.REGISTER", f'("mine_cfg={own_data}/people.json:{own_data}/photos",)'])
    assert register_datasets_from_config(cfg) == ["mine_cfg"]
    dicts = DatasetCatalog.get("mine_cfg")
    n_images = len(json.loads((own_data / "people.json").read_text())["images"])
    assert len(dicts) == n_images and all(d["file_name"].startswith(str(own_data / "photos")) for d in dicts)
    assert MetadataCatalog.get("mine_cfg").json_file == f"{own_data}/people.json"
    with pytest.raises(FileNotFoundError, match="Dataset 'gone': annotation file not found: .*nothing.json"):
        register_datasets_from_config(load_config(TINY_CONFIG, ["DATASETS.REGISTER", f'("gone={own_data}/nothing.json:{own_data}",)']))


def test_own_json_trains_and_evaluates_from_the_command_line(own_data, tmp_path):
    out = tmp_path / "out"
    spec = f"mine={own_data}/people.json:{own_data}/photos"
    common = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", TINY_CONFIG, "--dataset", spec]
    env = subprocess_env(tmp_path / "no_synthetic_here")  # nothing comes from the built-in synthetic set
    train = subprocess.run(common + ["DATASETS.TRAIN", '("mine",)', "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "4",
                                     "SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(out)],
                           capture_output=True, text=True, timeout=600, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    ev = subprocess.run(common + ["--eval-only", "DATASETS.TEST", '("mine",)', "MODEL.WEIGHTS", str(out / "model_final.pth"),
                                  "OUTPUT_DIR", str(out / "eval")], capture_output=True, text=True, timeout=600, env=env)
    assert ev.returncode == 0, ev.stderr[-3000:]
    results = json.loads((out / "eval" / "eval_results.json").read_text())
    assert set(results) == {"mine"} and "AP" in results["mine"]["bbox"]
