"""The leaked-task guard itself: a test that leaves a task behind must fail."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]


def test_leaked_task_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import _no_leaked_tasks  # noqa: F401\n")
    pytester.makepyfile(
        textwrap.dedent("""
        import asyncio

        async def test_leaks():
            asyncio.get_running_loop().create_task(asyncio.sleep(60), name="forgotten")

        async def test_tidy():
            await asyncio.sleep(0)
        """)
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    # The leaking test errors in teardown; the tidy one is untouched.
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_leaks*left 1 asyncio task(s) running: forgotten*"])
