# Copyright (c) mmvfm contributors. All rights reserved.
import pytest

from mmvfm.version import REQUIRED_VERSIONS, check_versions, digit_version


def test_digit_version_orders_pre_releases_and_local_tags():
    assert digit_version('2.13.0+cpu') == digit_version('2.13.0')
    assert digit_version('2.0.0rc4') < digit_version('2.0.0')
    assert digit_version('2.0.0') < digit_version('2.0.1')
    assert digit_version('2.1') == digit_version('2.1.0')
    assert digit_version('3.3.0') < digit_version('3.4.0')
    assert digit_version('0.10.7') < digit_version('1.0.0')


def _versions(**overrides):
    good = {name: low for name, (low, _, _) in REQUIRED_VERSIONS.items()}
    good.update(overrides)
    return lambda name: good.get(name)


def test_check_versions_accepts_the_pinned_stack():
    pins = dict(
        torch='2.13.0+cpu',
        mmcv='2.1.0',
        mmengine='0.10.7',
        mmdet='3.3.0',
        mmpretrain='1.2.0',
    )
    assert check_versions(lambda name: pins[name]) == pins


def test_installed_stack_is_accepted():
    found = check_versions()
    assert set(found) == set(REQUIRED_VERSIONS)


@pytest.mark.parametrize(
    'name,version',
    [
        ('mmcv', '2.2.0'),  # upper bound is exclusive
        ('mmcv', '1.7.1'),
        ('mmdet', '2.28.0'),
        ('mmdet', '3.4.0'),
        ('torch', '2.14.1'),
        ('mmengine', '1.0.0'),
    ],
)
def test_incompatible_version_names_package_versions_and_fix(name, version):
    with pytest.raises(ImportError) as err:
        check_versions(_versions(**{name: version}))
    msg = str(err.value)
    low, high, fix = REQUIRED_VERSIONS[name]
    assert f'{name}=={version} is installed' in msg
    assert f'{name}>={low},<{high}' in msg
    assert fix in msg


def test_missing_package_is_reported():
    get = _versions()

    def without_mmpretrain(name):
        return None if name == 'mmpretrain' else get(name)

    with pytest.raises(ImportError, match='mmpretrain is not installed'):
        check_versions(without_mmpretrain)
