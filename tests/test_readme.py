"""The value the README quotes for `make run` is what the code prints, to the digit."""

import re

from tests.kit import REPO, last_line, plain_loop


def quoted_value() -> str:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"`make run` prints the example's result.*?as the last line: `([^`]+)`", readme, re.DOTALL)
    assert found, "README.md no longer quotes the value `make run` prints"
    return found.group(1)


def test_readme_value_is_what_the_plain_loop_prints():
    assert plain_loop(REPO) == quoted_value()


def test_readme_value_is_what_the_controller_prints(kit):
    # `make run` is `python controller.py` on the shipped task.py
    done = kit.run()
    assert done.returncode == 0, done.stderr
    assert last_line(done.stdout) == quoted_value()
