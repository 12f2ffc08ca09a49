"""Hostile and damaged bundles (tests/hostile.py): every case of issue 3's security list,
and random damage under a fixed seed. Each one is refused with the verification exit code
(3; 4 where the rule is the unsigned-bundle policy) and the whole HOME, data dirs and state
dir included, is byte for byte as before. The long run is `python tools/fuzz_run.py --cases 2000`.
"""

from __future__ import annotations

import random

import pytest

from bundle_helpers import new_key
from bundler import raw_frames
from executor.config import PLAIN_WRITES_ENV
from hostile import HostileBundles, Host

SEED = 20240501
RANDOM_CASES = 24  # three of each kind of damage


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> HostileBundles:
    return HostileBundles(tmp_path_factory.mktemp("hostile"), key=new_key(), stranger=new_key())


@pytest.fixture(scope="module")
def named_cases(factory):
    return {case.name: case for case in factory.named()}


@pytest.fixture(params=["fast", "plain"])
def host(request, factory, isolated_env, monkeypatch) -> Host:
    """Every case both ways: the fast writers and the plain reference path (DEVOPS_CP_PLAIN_WRITES=1)."""
    if request.param == "plain":
        monkeypatch.setenv(PLAIN_WRITES_ENV, "1")
    return Host(factory.pub, factory.first)


def test_the_undamaged_update_installs(factory, host, isolated_env):
    """The control: each case below is refused for its damage, not for something else."""
    assert raw_frames.FRAME_HEADER in factory.compressed  # payload files in raw frames: damage reaches them too
    exit_code, output = host.sideload(factory.good.path)
    assert exit_code == 0, output
    assert host._installed_exactly_the_update() == []
    exit_code, output = host.sideload(factory.split.path)
    assert exit_code == 0, output


NAMES = [
    "dotdot-member-name", "absolute-member-name", "dotdot-in-a-long-pax-name", "dotdot-in-a-gnu-longname",
    "pax-header-renaming-a-member-outside", "pax-header-making-a-member-longer",
    "pax-header-turning-a-member-into-a-link", "global-pax-header-renaming-what-follows",
    "dotdot-path-in-a-signed-manifest", "absolute-path-in-a-signed-manifest", "symlink-member",
    "symlink-member-to-a-data-file", "hardlink-member", "char-device-member", "block-device-member", "fifo-member",
    "directory-member", "duplicate-member", "duplicate-of-the-last-member", "unlisted-member-at-the-end",
    "unlisted-member-in-the-middle", "listed-file-missing-at-the-end", "listed-file-missing-in-the-middle",
    "member-longer-than-declared", "member-shorter-than-declared", "header-claiming-a-terabyte",
    "changed-manifest-byte", "changed-payload-byte-same-length", "changed-compressed-byte", "truncated-in-the-header",
    "truncated-half-way", "truncated-by-its-checksum", "cut-at-the-end-of-the-last-member", "trailing-garbage",
    "a-second-zstd-frame", "tar-data-after-the-end-blocks", "zstd-bomb-after-the-archive",
    "first-member-is-not-the-manifest", "not-a-bundle-at-all", "empty-file", "signature-by-an-untrusted-key",
    "signature-of-another-manifest", "manifest-naming-another-signer", "truncated-signature", "signature-stripped",
    "split-part-with-a-changed-byte", "split-part-missing", "split-part-truncated", "split-parts-swapped",
    "split-index-changed", "split-index-signature-stripped",
]  # fmt: skip


def test_the_list_of_named_cases_is_complete(named_cases):
    assert sorted(named_cases) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_named_case_is_refused_and_the_host_is_untouched(name, named_cases, host, factory):
    outcome = host.check(named_cases[name])
    assert outcome.problems == [], outcome.problems
    assert not (factory.dir / "escaped.bin").exists()


def test_random_damage_under_a_fixed_seed(factory, host):
    outcomes = [host.check(case) for case in factory.random(random.Random(SEED), RANDOM_CASES)]
    failures = [f"{o.case.name}: {p}" for o in outcomes for p in o.problems]
    assert failures == [], "\n".join(failures)
    refused = [o for o in outcomes if o.refused]
    assert len(refused) >= RANDOM_CASES - 3, [o.case.name for o in outcomes if not o.refused]  # harmless ones are rare
