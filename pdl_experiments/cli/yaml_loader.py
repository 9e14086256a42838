"""OmegaConf reading YAML with libyaml's C parser (start-up time of every pdl-run)."""

from __future__ import annotations


def use_libyaml() -> None:
    """Let OmegaConf read YAML with libyaml's C parser when PyYAML has it.

    OmegaConf builds its loader on the pure-Python yaml.SafeLoader; the config files of one
    run take ~30 ms to parse that way, a sixth of `pdl-run --cfg job`. This loader is
    OmegaConf's own in every other respect (the same implicit resolvers and constructors,
    the same duplicate-key check), with the scanning and parsing done in C; the composed
    configs are identical (checked byte for byte on `--cfg job` and `-c all` outputs).
    """
    import yaml

    if not getattr(yaml, "__with_libyaml__", False):
        return
    try:
        import omegaconf._utils as oc_utils

        base = oc_utils.get_yaml_loader()
        scalar_tag = yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG

        class OmegaConfCLoader(yaml.CSafeLoader):
            def construct_mapping(self, node, deep=False):
                keys = set()
                for key_node, _ in node.value:
                    if key_node.tag != scalar_tag:
                        continue
                    if key_node.value in keys:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            f"found duplicate key {key_node.value}",
                            key_node.start_mark,
                        )
                    keys.add(key_node.value)
                return super().construct_mapping(node, deep=deep)

        OmegaConfCLoader.yaml_implicit_resolvers = base.yaml_implicit_resolvers
        OmegaConfCLoader.yaml_constructors = dict(base.yaml_constructors)
        oc_utils.get_yaml_loader = lambda: OmegaConfCLoader
    except Exception:
        return
