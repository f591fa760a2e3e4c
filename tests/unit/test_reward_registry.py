"""The reward registry: validating a request checks reward names without importing a trainer or
TRL, and ``known_rewards()`` lists every reward the built-in modules register.

Each check runs in a fresh interpreter, because this test process has long imported everything.

    .venv/bin/python -m pytest -q tests/unit/test_reward_registry.py
"""

import json
import subprocess
import sys

VALIDATE = """
import json, sys
from irsflow.config import parse_request
import irsflow.rewards

req = parse_request({
    "irs_config": {"dw_config": {"initial_weights": {"rel": 1.0, "faith": 1.0, "conc": 0.5, "rm": 1.0}}},
    "scoring": {"reward_model": sys.argv[1]},
})
assert req.scoring.reward_model == sys.argv[1]
names = irsflow.rewards.known_rewards()
loaded = sorted(m for m in sys.modules if m == "trl" or m.startswith(("trl.", "irsflow.training")))
print(json.dumps({"names": names, "loaded": loaded}))
"""

# Imports every module of the irsflow.rewards package, whatever BUILTIN_MODULES says, so the names
# registered by the package's own modules are known independently of the list under test.
EVERY_MODULE = """
import json, importlib, pkgutil
import irsflow.rewards

before = irsflow.rewards.known_rewards()
for info in pkgutil.iter_modules(irsflow.rewards.__path__, "irsflow.rewards."):
    importlib.import_module(info.name)
after = irsflow.rewards.known_rewards()
print(json.dumps({"before": before, "after": after}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_validating_a_request_imports_no_trainer_and_no_trl(tmp_path):
    rm_dir = tmp_path / "rm"
    rm_dir.mkdir()
    got = _run(VALIDATE, str(rm_dir))
    assert got["loaded"] == [], f"validating a request imported {got['loaded']}"
    assert {"rel", "faith", "conc", "rm"} <= set(got["names"]), got["names"]


def test_known_rewards_lists_every_builtin():
    got = _run(EVERY_MODULE)
    # a module left out of the built-ins would add its names only once imported directly
    assert got["before"] == got["after"], sorted(set(got["after"]) - set(got["before"]))
    assert {
        "rel",
        "faith",
        "conc",
        "ref",
        "rm",
        "rlaif",
        "teacher",
        "chain",
        "emergency",
        "risk",
        "length_limit",
        "question_ratio",
        "followup",
    } <= set(got["before"]), got["before"]
