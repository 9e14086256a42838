"""cli/messages.py: any error as the one line a user sees. The command lines themselves (their
help, their errors): e2e/test_cli_help.py, e2e/test_cli_errors.py."""

from __future__ import annotations


def test_one_line_names_the_error_hydra_wrapped():
    from pdl_experiments.cli.messages import one_line
    from pdl_experiments.config import ConfigError

    try:
        try:
            raise ConfigError("model.hidden=0 is out of range: expected integers >= 1")
        except ConfigError as inner:
            raise RuntimeError("Error in call to target 'x':\nfull_key: model\n") from inner
    except RuntimeError as e:
        assert one_line(e) == "model.hidden=0 is out of range: expected integers >= 1"
