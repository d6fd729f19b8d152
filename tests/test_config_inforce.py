"""ha.config.inforce: a config file as in force on one reader (issue #10), without a store."""

from __future__ import annotations

from ha.config.datacenter import DatacenterConfig, parse_datacenter_cfg
from ha.config.inforce import WHOLE_FILE, InForce
from ha.config.resources import ServiceConfig, parse_resources_cfg
from ha.errors import ConfigError

CFG = b"proc: a\n\tcmd sleep 1\n\tnode n1\n\nproc: b\n\tcmd sleep 2\n\tnode n2\n"


def parse(text: str, version: str | None) -> tuple[ServiceConfig, list[ConfigError]]:
    return parse_resources_cfg(text)


def services(conf: ServiceConfig) -> dict[str, object]:
    return conf.services  # type: ignore[return-value]


def test_read_once_per_version_then_cached() -> None:
    view: InForce[ServiceConfig] = InForce("resources.cfg", services)
    first = view.read(CFG, "v1", parse)
    assert first.fresh and not first.errors and sorted(first.value.services) == ["proc:a", "proc:b"]
    again = view.read(CFG, "v1", parse)
    assert not again.fresh and again.value is first.value


def test_a_broken_section_is_carried_over_until_the_file_is_clean() -> None:
    view: InForce[ServiceConfig] = InForce("resources.cfg", services)
    view.read(CFG, "v1", parse)
    broken = view.read(CFG.replace(b"sleep 2", b"sleep \xff"), "v2", parse)
    assert broken.kept == ["proc:b"] and broken.errors and "proc:b" in broken.value.services
    assert view.kept == ["proc:b"]
    clean = view.read(CFG.split(b"\n\n")[0] + b"\n", "v3", parse)
    assert clean.kept == [] and sorted(clean.value.services) == ["proc:a"], "removal takes effect once clean"


def test_a_whole_file_value_keeps_its_last_good_one() -> None:
    def dc(text: str, version: str | None) -> tuple[DatacenterConfig, list[ConfigError]]:
        try:
            return parse_datacenter_cfg(text, "datacenter.cfg"), []
        except ConfigError as e:
            return DatacenterConfig(), [e]

    view: InForce[DatacenterConfig] = InForce("datacenter.cfg", None)
    good = view.read(b"max_workers: 2\n", "v1", dc).value
    bad = view.read(b"\xff\xfe", "v2", dc)
    assert bad.kept == [WHOLE_FILE] and bad.value is good
