"""The profile-guided build's pieces that do not build: where llvm-profdata is, the
flags it adds and what it refuses to merge (what it trains with: test_steps.py)."""

import os
import tempfile
import unittest

from siplb_bench import pgo


class Flags(unittest.TestCase):
    def test_the_flag_is_added_to_the_environments_own(self):
        self.assertEqual(pgo.with_flag("", "-Cprofile-use=/p"), "-Cprofile-use=/p")
        self.assertEqual(pgo.with_flag("-Ctarget-cpu=x86-64-v2", "-Cprofile-use=/p"),
                         "-Ctarget-cpu=x86-64-v2 -Cprofile-use=/p")

    def test_llvm_profdata_is_rustups_for_the_host(self):
        libdir = "/root/.rustup/toolchains/t/lib/rustlib/x86_64-unknown-linux-gnu/lib"
        self.assertEqual(pgo.profdata_tool(libdir),
                         "/root/.rustup/toolchains/t/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-profdata")


class Profiles(unittest.TestCase):
    def test_no_profile_is_an_error_not_an_empty_merge(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(RuntimeError):
                pgo.raw_profiles(d)
            for name in ("b.profraw", "a.profraw", "notes.txt"):
                open(os.path.join(d, name), "w").close()
            self.assertEqual([os.path.basename(p) for p in pgo.raw_profiles(d)], ["a.profraw", "b.profraw"])


if __name__ == "__main__":
    unittest.main()
