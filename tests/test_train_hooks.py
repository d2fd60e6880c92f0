"""The training loop is made of hooks: call order, after_train on failure, and the standard hook list."""
import pytest
import torch

from densepose_fnl.engine import HookBase, SimpleTrainer, hooks


class _Recorder(HookBase):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def before_train(self):
        self.log.append((self.name, "before_train", self.trainer.iter))

    def before_step(self):
        self.log.append((self.name, "before_step", self.trainer.iter))

    def after_step(self):
        self.log.append((self.name, "after_step", self.trainer.iter))

    def after_train(self):
        self.log.append((self.name, "after_train", self.trainer.iter))


class _Quadratic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, batch):
        if batch == "boom":
            raise RuntimeError("bad batch")
        return {"loss": (self.w - batch) ** 2}


def _trainer(data):
    model = _Quadratic()
    return SimpleTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.1))


def test_hooks_run_in_registration_order_around_each_step():
    log = []
    t = _trainer([1.0] * 10)
    t.register_hooks([_Recorder(log, "a"), None, _Recorder(log, "b")])
    t.train(2, 4)
    assert log == [("a", "before_train", 2), ("b", "before_train", 2),
                   ("a", "before_step", 2), ("b", "before_step", 2), ("a", "after_step", 2), ("b", "after_step", 2),
                   ("a", "before_step", 3), ("b", "before_step", 3), ("a", "after_step", 3), ("b", "after_step", 3),
                   ("a", "after_train", 4), ("b", "after_train", 4)]
    assert t.storage.latest()["loss"][1] == 3 and t.model.w.item() < 3.0  # it trained


def test_after_train_runs_when_a_step_fails():
    log = []
    t = _trainer([1.0, "boom", 1.0])
    t.register_hooks([_Recorder(log, "a")])
    with pytest.raises(RuntimeError, match="bad batch"):
        t.train(0, 3)
    assert log[-1] == ("a", "after_train", 1)


def test_non_finite_loss_names_the_iteration():
    t = _trainer([float("inf")])
    with pytest.raises(FloatingPointError, match="iteration 0"):
        t.train(0, 1)


def test_lr_scheduler_and_eval_hooks():
    t = _trainer([1.0] * 6)
    sched = torch.optim.lr_scheduler.StepLR(t.optimizer, step_size=2, gamma=0.5)
    calls = []
    ev = hooks.EvalHook(2, lambda: calls.append(t.iter) or {"ds": {"bbox": {"AP": 50.0}}})
    t.register_hooks([hooks.LRScheduler(t.optimizer, sched), ev])
    t.train(0, 5)
    assert calls == [1, 3, 4]  # every 2 iterations and after the last
    assert t.storage.latest()["bbox/AP"][0] == 50.0
    assert t.storage.window("lr") == [0.1, 0.1, 0.05, 0.05, 0.025]
