"""Tests for deploy/lib/events.py. Run: python3 deploy/lib/tests/test_events_py.py"""

import datetime
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from contextlib import redirect_stderr
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, LIB)

import events  # noqa: E402
from events import EventError, emit_event, list_events  # noqa: E402

KEYS = ["id", "timestamp", "node", "type", "severity", "source", "service", "correlation_id", "payload"]
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.data = os.path.join(self.tmp, "data")
        env = {"LABMESH_DATA_DIR": self.data, "LABMESH_NAME": "testnode"}
        self.env = mock.patch.dict(os.environ, env)
        self.env.start()
        os.environ.pop("LABMESH_MAX_EVENT_BYTES", None)

    def tearDown(self):
        self.env.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def files(self):
        out = []
        for root, _, names in os.walk(self.tmp):
            out.extend(os.path.join(root, n) for n in names)
        return sorted(out)

    def emit(self, **kw):
        args = dict(event_type="deployment_started", severity="info", source="my-script.py",
                    service="mosquitto", correlation_id="cid-1", payload={"version": "1.0"})
        args.update(kw)
        return emit_event(**args)

    def assertRejected(self, fragment, **kw):
        before = self.files()
        with self.assertRaises(EventError) as cm:
            self.emit(**kw)
        msg = str(cm.exception)
        self.assertIn(fragment, msg)
        self.assertIn("Fix: ", msg)
        self.assertIsInstance(cm.exception, ValueError)
        self.assertEqual(before, self.files(), "a rejected event must write nothing")
        return msg


class EmitTest(Base):
    def test_happy_path(self):
        path = emit_event(event_type="service_unhealthy", severity="error", source="monitor.py",
                          service="ollama", correlation_id="12345", payload={"error": "OOM"})
        self.assertIsInstance(path, str)
        self.assertTrue(os.path.isabs(path) and os.path.isfile(path))
        m = re.fullmatch(re.escape(self.data) + r"/events/(\d{4}-\d{2}-\d{2})/testnode/"
                         r"(\d{8}T\d{6}\.\d{3}Z)_service_unhealthy_([0-9a-f-]{36})\.json", path)
        self.assertIsNotNone(m, path)
        with open(path, "rb") as f:
            raw = f.read()
        self.assertTrue(raw.endswith(b"\n") and raw.count(b"\n") == 1, raw)
        pairs = json.loads(raw, object_pairs_hook=lambda p: p)
        self.assertEqual([k for k, _ in pairs], KEYS)
        e = json.loads(raw)
        self.assertEqual(raw, (json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n").encode())
        self.assertRegex(e["id"], UUID7)
        self.assertRegex(e["timestamp"], TS)
        self.assertEqual(e["id"], m.group(3))
        self.assertEqual(e["timestamp"][:10], m.group(1))
        ts = e["timestamp"]
        self.assertEqual(m.group(2), ts[0:4] + ts[5:7] + ts[8:10] + "T" + ts[11:13] + ts[14:16]
                         + ts[17:19] + "." + ts[20:23] + "Z")
        when = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
        unix_ms = round(when.timestamp() * 1000)
        self.assertEqual(int(e["id"].replace("-", "")[:12], 16), unix_ms)
        self.assertLess(abs(when.timestamp() - datetime.datetime.now(datetime.timezone.utc).timestamp()), 2)
        self.assertEqual((e["node"], e["type"], e["severity"], e["source"], e["service"],
                          e["correlation_id"], e["payload"]),
                         ("testnode", "service_unhealthy", "error", "monitor.py", "ollama", "12345",
                          {"error": "OOM"}))
        self.assertFalse([f for f in self.files() if os.path.basename(f).startswith(".")])

    def test_positional_call_and_defaults(self):
        path = emit_event("service_recovered", "warning", "healthcheck.py", "all")
        with open(path, encoding="utf-8") as f:
            e = json.load(f)
        self.assertEqual((e["payload"], e["correlation_id"], e["service"]), ({}, "", "all"))

    def test_escapes_and_unicode(self):
        src = "it's \"quoted\" \\back\\slash\\ é 日本 😀 /"
        cid = 'cid "x" \\n not-a-newline \\u0041'
        payload = {"s": "x\n\t\"\\ é", "ctl": "\x00\x1f\x7f", "n": [1, -0.5, 2e10, None, True, False],
                   "o": {"k": [[{"deep": "yes"}]]}, "": "empty key"}
        path = self.emit(source=src, correlation_id=cid, service='svc-"1"', payload=payload)
        with open(path, "rb") as f:
            raw = f.read()
        self.assertEqual(raw.count(b"\n"), 1)
        self.assertIn("日本 😀".encode(), raw)
        e = json.loads(raw)
        self.assertEqual((e["source"], e["correlation_id"], e["service"], e["payload"]),
                         (src, cid, 'svc-"1"', payload))

    def test_payload_encoding_matches_spec(self):
        payload = {"b": [1, 2.5], "a": {"é": None}}
        path = self.emit(payload=payload)
        with open(path, encoding="utf-8") as f:
            line = f.read()
        want = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        self.assertTrue(line.endswith(',"payload":' + want + "}\n"), line)

    # --- rejections -------------------------------------------------------------------------
    def test_rejects_bad_type(self):
        for bad in ["Deployment_started", "deployment-started", "deployment__started", "deployment_",
                    "1deploy", "_x", "a b", "a" * 65, "déploy", "x\n"]:
            with self.subTest(bad=bad):
                self.assertRejected("invalid type", event_type=bad)
        self.assertRejected("invalid type '': it is empty", event_type="")
        self.assertRejected("it must be a str", event_type=None)
        self.emit(event_type="a" * 64)
        self.emit(event_type="x1_2y_z")

    def test_rejects_bad_severity(self):
        for bad in ["warn", "INFO", "", "debug", None]:
            with self.subTest(bad=bad):
                self.assertRejected("invalid severity", severity=bad)

    def test_rejects_bad_text_fields(self):
        self.assertRejected("invalid source '': it is empty", source="")
        self.assertRejected("invalid service '': it is empty", service="")
        self.assertRejected("invalid source", source=None)
        self.assertRejected("invalid service", service=b"bytes")
        self.assertRejected("invalid correlation_id", correlation_id=12345)
        self.assertRejected("control character U+000A at byte 2", source="a\nb")
        self.assertRejected("control character U+0009", service="a\tb")
        self.assertRejected("control character U+007F", correlation_id="a\x7fb")
        self.assertRejected("control character U+0000", correlation_id="a\x00b")
        self.assertRejected("control character U+001B", correlation_id="\x1b[31m")
        self.assertRejected("257 bytes long, the limit is 256", source="x" * 257)
        self.assertRejected("258 bytes long", correlation_id="é" * 129)
        self.assertRejected("lone surrogate", source="bad\udcff")
        self.emit(source="x" * 256, correlation_id="é" * 128)

    def test_rejects_bad_payload(self):
        self.assertRejected("invalid payload: it must be a dict", payload=[1, 2])
        msg = self.assertRejected("invalid payload: it must be a dict", payload='{"a": 1}')
        self.assertIn("json.loads", msg)
        self.assertRejected("not JSON-serialisable", payload={"a": {1, 2}})
        self.assertRejected("not JSON-serialisable", payload={"a": float("nan")})
        self.assertRejected("not JSON-serialisable", payload={"a": float("inf")})
        self.assertRejected("not JSON-serialisable", payload={("t",): 1})
        loop = {}
        loop["self"] = loop
        self.assertRejected("not JSON-serialisable", payload=loop)
        self.assertRejected("lone surrogate", payload={"a": "\ud800"})
        self.assertRejected("out of range for a 64-bit float", payload={"a": 10 ** 400})
        deep = inner = {}
        for _ in range(64):
            inner["a"] = {}
            inner = inner["a"]
        self.assertRejected("nests deeper than 64 levels", payload=deep)
        ok = inner = {}
        for _ in range(63):
            inner["a"] = {}
            inner = inner["a"]
        self.emit(payload=ok)

    def test_rejects_too_large(self):
        os.environ["LABMESH_MAX_EVENT_BYTES"] = "200"
        msg = self.assertRejected("over the limit of 200 bytes", payload={"big": "x" * 100})
        self.assertRegex(msg, r"the event file would be \d+ bytes")
        os.environ.pop("LABMESH_MAX_EVENT_BYTES")
        size = os.path.getsize(self.emit(payload={}))
        os.environ["LABMESH_MAX_EVENT_BYTES"] = str(size)
        self.emit(payload={})
        os.environ["LABMESH_MAX_EVENT_BYTES"] = str(size - 1)
        self.assertRejected("would be %d bytes, over the limit of %d" % (size, size - 1), payload={})
        os.environ["LABMESH_MAX_EVENT_BYTES"] = "abc"
        self.assertRejected("invalid LABMESH_MAX_EVENT_BYTES", payload={})

    def test_rejects_bad_node_name(self):
        for bad in ["bad_name", "-lead", "trail-", "a..b", "a." , "a" * 64, "x" * 254, "é"]:
            with self.subTest(bad=bad):
                os.environ["LABMESH_NAME"] = bad
                msg = self.assertRejected("invalid node name")
                self.assertIn("LABMESH_NAME", msg)
        os.environ["LABMESH_NAME"] = "Saturn.lan-1"
        self.assertIn("/Saturn.lan-1/", self.emit())

    def test_node_defaults_to_host_name(self):
        os.environ["LABMESH_NAME"] = ""
        e = json.load(open(self.emit(), encoding="utf-8"))
        self.assertEqual(e["node"], socket.gethostname())

    def test_data_dir_resolution(self):
        rel = os.path.join(self.tmp, "rel")
        os.makedirs(rel)
        old = os.getcwd()
        try:
            os.chdir(rel)
            os.environ["LABMESH_DATA_DIR"] = "rel-data/"
            path = self.emit()
        finally:
            os.chdir(old)
        self.assertTrue(path.startswith(os.path.realpath(rel) + "/rel-data/events/"), path)
        os.environ.pop("LABMESH_DATA_DIR")
        with mock.patch.dict(os.environ, {"XDG_DATA_HOME": "/x/y", "HOME": "/h"}):
            with mock.patch("os.geteuid", return_value=0):
                self.assertEqual(events._data_dir(), "/var/lib/labmesh")
            with mock.patch("os.geteuid", return_value=1000):
                self.assertEqual(events._data_dir(), "/x/y/labmesh")
                os.environ["XDG_DATA_HOME"] = "relative"
                self.assertEqual(events._data_dir(), "/h/.local/share/labmesh")
                os.environ.pop("XDG_DATA_HOME")
                self.assertEqual(events._data_dir(), "/h/.local/share/labmesh")
                os.environ.pop("HOME")
                with self.assertRaises(EventError):
                    events._data_dir()

    def test_disk_error_is_oserror_with_path(self):
        if os.geteuid() == 0:
            blocker = os.path.join(self.tmp, "file")
            open(blocker, "w").close()
            os.environ["LABMESH_DATA_DIR"] = blocker  # a file where a folder must be
        else:
            ro = os.path.join(self.tmp, "ro")
            os.makedirs(ro)
            os.chmod(ro, stat.S_IRUSR | stat.S_IXUSR)
            os.environ["LABMESH_DATA_DIR"] = ro
        with self.assertRaises(OSError) as cm:
            self.emit()
        self.assertNotIsInstance(cm.exception, ValueError)
        self.assertIn(os.environ["LABMESH_DATA_DIR"], str(cm.exception))
        self.assertFalse([f for f in self.files() if f.endswith(".tmp")])

    def test_temp_file_removed_when_write_fails(self):
        os.remove(self.emit())  # folders exist: the failure hits the temp file's fsync
        with mock.patch("os.fsync", side_effect=OSError(5, "Input/output error")):
            with self.assertRaises(OSError) as cm:
                self.emit()
        self.assertIn(".tmp", str(cm.exception))
        self.assertEqual([f for f in self.files() if f.endswith(".json") or f.endswith(".tmp")], [])

    def test_parallel_writers(self):
        paths = []
        threads = [threading.Thread(target=lambda i=i: paths.append(self.emit(payload={"i": i})))
                   for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(set(paths)), 20)
        self.assertEqual(len(list_events()), 20)


class ListTest(Base):
    def test_list_orders_across_nodes_and_skips_junk(self):
        for n in (1, 2, 3):
            for node in ("alpha", "beta"):
                os.environ["LABMESH_NAME"] = node
                self.emit(event_type="list_test", payload={"seq": "%s%d" % (node[0], n)})
                time.sleep(0.002)  # same-millisecond events order by type, then random id
        got = [e["payload"]["seq"] for e in list_events()]
        self.assertEqual(got, ["a1", "b1", "a2", "b2", "a3", "b3"])
        day = os.path.join(self.data, "events", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"))
        with open(os.path.join(day, "beta", "00000000T000000.000Z_zz_x.json"), "w") as f:
            f.write('{"hand": "first"}')
        for name, text in [(".hidden.json", "{}"), (".a.json.1234.tmp", "{}"), ("notes.txt", "{}")]:
            with open(os.path.join(day, "alpha", name), "w") as f:
                f.write(text)
        os.makedirs(os.path.join(day, ".staging"))
        with open(os.path.join(day, ".staging", "x.json"), "w") as f:
            f.write("{}")
        with open(os.path.join(day, "alpha", "99999999T999999.999Z_bad_x.json"), "w") as f:
            f.write("{not json")
        with open(os.path.join(day, "alpha", "99999999T999999.999Z_list_x.json"), "w") as f:
            f.write("[1]")
        err = io.StringIO()
        with redirect_stderr(err):
            evs = list_events(date=day[-10:])
        self.assertEqual(len(evs), 7)
        self.assertEqual(evs[0], {"hand": "first"})
        self.assertIn("99999999T999999.999Z_bad_x.json", err.getvalue())
        self.assertIn("not a JSON object", err.getvalue())
        self.assertEqual([e["node"] for e in list_events(node="beta")[1:]], ["beta"] * 3)
        self.assertEqual(list_events(node="gamma"), [])

    def test_list_dates(self):
        self.assertEqual(list_events(date="1999-01-01"), [])
        self.assertEqual(list_events(date="2024-02-29"), [])
        for bad in ["2026-5-12", "20260512", "2026-13-01", "2026-02-30", "2026-05-12T00:00", "yesterday", 20260512]:
            with self.subTest(bad=bad):
                with self.assertRaises(EventError) as cm:
                    list_events(date=bad)
                self.assertIn("invalid date", str(cm.exception))
        with self.assertRaises(EventError):
            list_events(node="bad_name")

    @unittest.skipUnless(shutil.which("bash"), "needs bash")
    def test_reads_events_written_by_both_libraries(self):
        script = 'source "$1" && emit_event cross_check info test.sh mosquitto cid-sh \'{"from": "sh", "n": [1, 2]}\''
        out = subprocess.run(["bash", "-c", script, "_", os.path.join(LIB, "events.sh")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True,
                             universal_newlines=True)
        sh_path = out.stdout.strip()
        py_path = self.emit(event_type="cross_check", correlation_id="cid-py", payload={"from": "py", "n": [1, 2]})
        evs = list_events()
        self.assertEqual(len(evs), 2)
        self.assertEqual({e["payload"]["from"] for e in evs}, {"sh", "py"})
        self.assertEqual(set(evs[0]), set(evs[1]))
        self.assertEqual(list(evs[0]), KEYS)
        self.assertEqual(list(evs[1]), KEYS)
        self.assertEqual(os.path.dirname(sh_path), os.path.dirname(py_path))
        # both writers encode the fields before the payload the same way (the shell keeps the
        # caller's payload text, spaces included)
        for path in (sh_path, py_path):
            with open(path, encoding="utf-8") as f:
                line = f.read()
            e = json.loads(line)
            head = json.dumps({k: e[k] for k in KEYS[:-1]}, separators=(",", ":"), ensure_ascii=False)
            self.assertTrue(line.startswith(head[:-1] + ',"payload":{'), line)


class ShellJsonValidatorTest(unittest.TestCase):
    """events.sh's pure-bash JSON validator (fast and precise paths) against Python's json."""

    SCRIPT = r'''
source "$1"
LC_ALL=C
_lm_fn=test
while IFS= read -r -d '' p; do
    f=0 s=0 _lm_json=''
    if _labmesh_utf8 "$p"; then
        _labmesh_json_fast "$p" && f=1
        _labmesh_json_object "$p" && s=1
        _labmesh_json_oneline "$p"
    fi
    printf '%s%s\0%s\0' "$f" "$s" "$_lm_json"
done
'''

    @staticmethod
    def reference(text):
        """Valid for events.sh: one JSON object, finite numbers, no lone surrogates, depth <= 64."""
        def finite(s):
            f = float(s)
            if f in (float("inf"), float("-inf")):
                raise ValueError(s)
            return f

        def fits(s):
            float(int(s))  # OverflowError past a double
            return int(s)

        def reject(s):
            raise ValueError(s)

        def check(v, depth):
            if isinstance(v, str):
                v.encode("utf-8")
            elif isinstance(v, (dict, list)):
                if depth > 64:
                    raise ValueError("deep")
                for k in v if isinstance(v, dict) else ():
                    k.encode("utf-8")
                for x in (v.values() if isinstance(v, dict) else v):
                    check(x, depth + 1)

        try:
            v = json.loads(text, parse_float=finite, parse_int=fits, parse_constant=reject)
            if not isinstance(v, dict):
                return False
            check(v, 1)
        except (ValueError, OverflowError, RecursionError, UnicodeEncodeError):
            return False
        return True

    @staticmethod
    def generate(rng, count):
        chars = ["a", " ", "é", "😀", '"', "\\", "/", "\n", "\t", "\x01", "\x7f", "{", "]", ":", ",", "0"]
        ws = ["", "", "", " ", "\n  ", "\t", "\r\n"]

        def text():
            return "".join(rng.choice(chars) for _ in range(rng.randint(0, 5)))

        def value(d):
            r = rng.random()
            if d > 3 or r < 0.5:
                return rng.choice([rng.randint(-10 ** 6, 10 ** 6), rng.uniform(-1e6, 1e6), True, False,
                                   None, text(), 1e300, 10 ** 20, 0.5e-7])
            if r < 0.75:
                return [value(d + 1) for _ in range(rng.randint(0, 3))]
            return {text(): value(d + 1) for _ in range(rng.randint(0, 3))}

        def ser(v):
            if isinstance(v, dict):
                return "{" + rng.choice(ws) + ",".join(
                    rng.choice(ws) + ser(k) + rng.choice(ws) + ":" + rng.choice(ws) + ser(x) + rng.choice(ws)
                    for k, x in v.items()) + "}"
            if isinstance(v, list):
                return "[" + rng.choice(ws) + ",".join(rng.choice(ws) + ser(x) + rng.choice(ws) for x in v) + "]"
            if isinstance(v, float) and rng.random() < 0.3:
                return rng.choice(["1E2", "-0.5e-3", "1e400", "1e-400", "0e999", "2e308"])
            if isinstance(v, str) and rng.random() < 0.3:
                return '"' + "".join("\\u%04x" % ord(c) if ord(c) < 0x10000 else "\\ud83d\\ude00" for c in v) + '"'
            return json.dumps(v, ensure_ascii=rng.random() < 0.2)

        mutations = ['"', "{", "}", "[", "]", ",", ":", "\\", " ", "\n", "0", "-", ".", "e", "+", "t",
                     "null", "\\u", "\\ud800", "\\udc00", "x", "\x01", ",]", ",}", "01", "1e400"]
        out = []
        for _ in range(count):
            t = rng.choice(ws) + ser({text(): value(0) for _ in range(rng.randint(0, 4))}) + rng.choice(ws)
            if rng.random() < 0.5:
                for _ in range(rng.randint(1, 3)):
                    i = rng.randint(0, len(t))
                    t = t[:i] + (rng.choice(mutations) if rng.random() < 0.6 else "") + t[i + 1:]
            out.append(t)
        return out + [
            "{}", '{"a":1,}', '{"a":[1,]}', "[]", "{},{}", '{"a":1}{"b":2}', '{"a":1 "b":2}', '{"a" 1}',
            '{"a":01}', '{"a":1.}', '{"a":tru}', '{"a":[1 2]}', '{"a":"b":"c"}', '{"a":[1,"b":2]}',
            '{"a":1,2}', '{{}:1}', '{"a":1}}', '{"a":1', '{"a":"x\\"}', '{"a":"\\ud83d\\ude00"}',
            '{"a":"\\ud83d"}', '{"a":' * 64 + "1" + "}" * 64, '{"a":' * 65 + "1" + "}" * 65, '{}"',
        ]

    @unittest.skipUnless(shutil.which("bash"), "needs bash")
    def test_agrees_with_python_json(self):
        import random
        cases = self.generate(random.Random(20260512), 600)
        data = b"".join(c.encode("utf-8", "surrogatepass") + b"\0" for c in cases)
        out = subprocess.run(["bash", "-c", self.SCRIPT, "_", os.path.join(LIB, "events.sh")],
                             input=data, stdout=subprocess.PIPE, check=True).stdout.split(b"\0")
        self.assertEqual(len(out), 2 * len(cases) + 1)
        accepted = 0
        for i, case in enumerate(cases):
            flags, oneline = out[2 * i].decode(), out[2 * i + 1]
            fast, precise = flags[0] == "1", flags[1] == "1"
            want = self.reference(case)
            accepted += want
            with self.subTest(case=case):
                self.assertFalse(fast and not precise, "fast path accepted what the precise path rejects")
                self.assertEqual(precise, want)
                if precise:
                    text = oneline.decode("utf-8")
                    self.assertNotRegex(text, "[\n\r\t]")
                    self.assertEqual(text, text.strip())
                    self.assertEqual(json.loads(text), json.loads(case))
        self.assertGreater(accepted, 100)


if __name__ == "__main__":
    unittest.main(verbosity=2)
