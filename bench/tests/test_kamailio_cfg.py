"""Kamailio's configuration (siplb_bench/kamailio.cfg, with @NAME@ placeholders) renders
completely, and Kamailio's command line differs between the tuned and default runs."""

import re
import unittest

from siplb_bench import peers
from siplb_bench.layout import KAMAILIO_SHM_MB

VALUES = dict(children=4, modules="/usr/lib/x86_64-linux-gnu/kamailio/modules", ip="127.0.0.1",
              port=5070, dir="/tmp/siplb-bench-x/kamailio")


class KamailioConfig(unittest.TestCase):
    def test_template_fields_are_exactly_the_five_filled_in(self):
        with open(peers.KAMAILIO_CFG, encoding="utf-8") as f:
            template = f.read()
        fields = set(re.findall(r"@([A-Z]+)@", template))
        self.assertEqual(fields, {name.upper() for name in VALUES})

    def test_renders_every_placeholder(self):
        cfg = peers.kamailio_cfg(**VALUES)
        self.assertTrue(cfg.startswith("#!KAMAILIO\n"))
        for name in VALUES:
            self.assertNotIn("@" + name.upper() + "@", cfg)
        self.assertIn("\nchildren=4\n", cfg)
        self.assertIn("\nlisten=udp:127.0.0.1:5070\n", cfg)
        self.assertIn('\nmpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"\n', cfg)
        self.assertIn('modparam("dispatcher", "list_file", "/tmp/siplb-bench-x/kamailio/dispatcher.list")', cfg)
        self.assertIn("\nrequest_route {\n", cfg)
        self.assertEqual(cfg.count("{"), cfg.count("}"))

    def test_dispatcher_in_call_load_mode(self):
        cfg = peers.kamailio_cfg(**VALUES)
        self.assertIn('loadmodule "dispatcher.so"', cfg)
        self.assertIn('ds_select_dst("1", "10")', cfg)  # algorithm 10: call load
        for call in ("ds_load_update();", "ds_load_unset();"):
            self.assertIn(call, cfg)

    def test_tuned_and_default_differ_on_the_command_line_only(self):
        # start_kamailio renders the same configuration for both; only its argv differs.
        tuned = peers.kamailio_argv("/w/kamailio.cfg", "/w", tuned=True)
        default = peers.kamailio_argv("/w/kamailio.cfg", "/w", tuned=False)
        self.assertEqual(tuned[:tuned.index("-m")], default[:default.index("-m")])
        self.assertEqual(tuned[tuned.index("-m") + 1], str(KAMAILIO_SHM_MB))
        self.assertEqual(default[default.index("-m") + 1], "1024")
        self.assertEqual(tuned[-6:], ["-x", "tlsf", "-X", "tlsf", "-b", "4194304"])
        for flag in ("-x", "-X", "-b"):
            self.assertNotIn(flag, default)
        self.assertIn("/w/kamailio.cfg", tuned)
        self.assertIn("-DD", default)


if __name__ == "__main__":
    unittest.main()
