"""labmesh events library for Python scripts (stdlib only, Python >= 3.8).

    import sys; sys.path.insert(0, "deploy/lib")
    from events import emit_event, list_events

    path = emit_event(event_type="service_unhealthy", severity="error", source="monitor.py",
                      service="ollama", correlation_id="12345", payload={"error": "OOM"})
    events = list_events()                 # today (UTC); or date="2026-05-12", node="vm1"

Writes the labmesh on-disk event format directly (no agent needed):

    <data>/events/<YYYY-MM-DD>/<node>/<YYYYMMDDTHHMMSS.mmmZ>_<type>_<uuidv7>.json

holding one line of compact JSON (keys id, timestamp, node, type, severity, source, service,
correlation_id, payload) and a trailing newline. The file is written to a dot-prefixed temp file
in the same folder, fsynced, renamed into place, and the folder is fsynced.

Invalid input raises EventError (a ValueError) naming the field, what is wrong and the fix;
disk problems raise OSError with the path. Environment: LABMESH_DATA_DIR, LABMESH_NAME,
LABMESH_MAX_EVENT_BYTES (see README.md). The same rules as events.sh.
"""

import datetime
import json
import os
import re
import socket
import sys
import time
import uuid

__all__ = ["EventError", "emit_event", "list_events", "SEVERITIES"]

SEVERITIES = ("info", "warning", "error", "critical")
DEFAULT_MAX_EVENT_BYTES = 65536
MAX_TEXT_BYTES = 256
MAX_TYPE_CHARS = 64
MAX_PAYLOAD_DEPTH = 64  # the payload object itself is level 1

_TYPE_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


class EventError(ValueError):
    """Invalid input for emit_event / list_events; the message names the field and the fix."""


def _show(value):
    text = repr(value)
    if len(text) > 62:
        text = "%s... (%d chars)" % (text[:60], len(value) if hasattr(value, "__len__") else 0)
    return text


def _is_hostname(name):
    if not 1 <= len(name) <= 253:
        return False
    return all(len(label) <= 63 and _LABEL_RE.fullmatch(label) for label in name.split("."))


def _check_str(field, value, required, example):
    if not isinstance(value, str):
        raise EventError(
            "invalid %s %s: it must be a str, not %s. Fix: pass text, e.g. %s."
            % (field, _show(value), type(value).__name__, example or "''")
        )
    if value == "":
        if required:
            raise EventError(
                "invalid %s '': it is empty. Fix: pass a non-empty %s, e.g. %s." % (field, field, example)
            )
        return
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise EventError(
            "invalid %s %s: it is not valid Unicode text (it contains a lone surrogate). "
            "Fix: decode your input as UTF-8 with errors='replace'." % (field, _show(value))
        ) from None
    if size > MAX_TEXT_BYTES:
        raise EventError(
            "invalid %s %s: it is %d bytes long, the limit is %d bytes. Fix: shorten it."
            % (field, _show(value), size, MAX_TEXT_BYTES)
        )
    m = _CONTROL_RE.search(value)
    if m:
        raise EventError(
            "invalid %s %s: it contains the control character U+%04X at byte %d. "
            "Fix: remove control characters (newlines, tabs, escape codes) from it."
            % (field, _show(value), ord(m.group()), len(value[: m.start()].encode("utf-8")) + 1)
        )


def _node_name():
    name = os.environ.get("LABMESH_NAME", "")
    source = "LABMESH_NAME"
    if not name:
        name = socket.gethostname()
        source = "the host name"
    if not _is_hostname(name):
        raise EventError(
            "invalid node name %s (from %s): it must be a valid host name: 1-253 characters, "
            "dot-separated labels of 1-63 ASCII letters, digits or '-', not starting or ending "
            "with '-'. Fix: set LABMESH_NAME to a valid name, e.g. export LABMESH_NAME=saturn."
            % (_show(name), source)
        )
    return name


def _data_dir():
    """The data folder, absolute, without a trailing slash (not created here)."""
    d = os.environ.get("LABMESH_DATA_DIR", "")
    if not d:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            d = "/var/lib/labmesh"
        else:
            base = os.environ.get("XDG_DATA_HOME", "")
            if not base.startswith("/"):  # XDG: relative paths are ignored
                home = os.environ.get("HOME", "")
                if not home:
                    raise EventError(
                        "cannot find the data folder: HOME is not set. "
                        "Fix: set LABMESH_DATA_DIR (e.g. export LABMESH_DATA_DIR=/var/lib/labmesh)."
                    )
                base = home + "/.local/share"
            d = base + "/labmesh"
    if not d.startswith("/"):
        d = os.getcwd() + "/" + d
    d = d.rstrip("/")
    return d or "/"


def _max_event_bytes():
    raw = os.environ.get("LABMESH_MAX_EVENT_BYTES", "")
    if not raw:
        return DEFAULT_MAX_EVENT_BYTES
    if not re.fullmatch(r"[0-9]{1,15}", raw) or int(raw) == 0:
        raise EventError(
            "invalid LABMESH_MAX_EVENT_BYTES %s: it must be a positive whole number of bytes. "
            "Fix: unset it (default 65536) or set e.g. LABMESH_MAX_EVENT_BYTES=65536." % _show(raw)
        )
    return int(raw)


def _check_payload_values(payload):
    """Depth limit and integers a 64-bit float cannot hold (the Rust reader rejects both)."""
    stack = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > MAX_PAYLOAD_DEPTH:
                raise EventError(
                    "invalid payload: it nests deeper than %d levels. Fix: flatten it."
                    % MAX_PAYLOAD_DEPTH
                )
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                float(value)
            except OverflowError:
                raise EventError(
                    "invalid payload: the integer %s... is out of range for a 64-bit float. "
                    "Fix: send it as a string." % str(value)[:20]
                ) from None


def _encode_payload(payload):
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        hint = " (to pass JSON text, use json.loads(text) first)" if isinstance(payload, (str, bytes)) else ""
        raise EventError(
            "invalid payload: it must be a dict (a JSON object), not %s. Fix: pass a dict, "
            "e.g. {'version': '1.0'}%s." % (type(payload).__name__, hint)
        )
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise EventError(
            "invalid payload: it is not JSON-serialisable: %s. Fix: use only dict, list, str, "
            "int, finite float, bool and None values." % e
        ) from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError(
            "invalid payload: a string in it is not valid Unicode (it contains a lone surrogate). "
            "Fix: decode your input as UTF-8 with errors='replace'."
        ) from None
    _check_payload_values(payload)
    return text


def _uuid7(unix_ms):
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    rand_a = rand & 0xFFF
    rand_b = (rand >> 12) & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def _fsync_dir(path):
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(err, what, path):
    """An OSError of the same kind (errno) whose message says what failed; the path is kept."""
    return OSError(err.errno, "%s: %s" % (what, err.strerror or err), path)


def _make_dirs(folder):
    """mkdir -p, then fsync the parent of every folder it created."""
    if os.path.isdir(folder):
        return
    missing = []
    p = folder
    while p and p != "/" and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    missing.reverse()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise _os_error(
            e, "cannot create the event folder (fix: make it writable or set LABMESH_DATA_DIR)",
            folder) from e
    # New folders' entries live in their parents; the last one is fsynced after the rename.
    for parent in [p or "/"] + missing[:-1]:
        try:
            _fsync_dir(parent)
        except OSError as e:
            raise _os_error(e, "cannot fsync the new folder", parent) from e


def _write_durably(folder, name, data):
    final = folder + "/" + name
    tmp = "%s/.%s.%s.tmp" % (folder, name, os.urandom(4).hex())
    _make_dirs(folder)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise _os_error(e, "cannot create the temp event file", tmp) from e
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _os_error(e, "cannot write the event file (nothing was stored)", tmp) from e
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        _fsync_dir(folder)
    except OSError as e:
        raise _os_error(
            e, "stored %s but could not fsync its folder: the event may be lost on a crash" % final,
            folder) from e
    return final


def emit_event(event_type, severity, source, service, correlation_id="", payload=None):
    """Store one event and return the absolute path of its file.

    Raises EventError (ValueError) for invalid input and OSError for disk problems.
    """
    if not isinstance(event_type, str) or not event_type:
        if isinstance(event_type, str):
            raise EventError(
                "invalid type '': it is empty. Fix: pass a snake_case event type, e.g. 'deployment_started'."
            )
        raise EventError(
            "invalid type %s: it must be a str, not %s. Fix: pass a snake_case event type, "
            "e.g. 'deployment_started'." % (_show(event_type), type(event_type).__name__)
        )
    if not _TYPE_RE.fullmatch(event_type):
        raise EventError(
            "invalid type %s: it must be snake_case (lowercase letters a-z and digits, words "
            "joined by single underscores, starting with a letter). Fix: use a name like "
            "'deployment_started'." % _show(event_type)
        )
    if len(event_type) > MAX_TYPE_CHARS:
        raise EventError(
            "invalid type %s: it is %d characters long, the limit is %d. Fix: use a shorter name."
            % (_show(event_type), len(event_type), MAX_TYPE_CHARS)
        )
    if not isinstance(severity, str) or severity not in SEVERITIES:
        raise EventError(
            "invalid severity %s: it must be one of info, warning, error, critical. "
            "Fix: pass one of those (lowercase)." % _show(severity)
        )
    _check_str("source", source, True, "'monitor.py'")
    _check_str("service", service, True, "'ollama', or 'all'")
    _check_str("correlation_id", correlation_id, False, "")
    payload_json = _encode_payload(payload)

    node = _node_name()
    data = _data_dir()
    limit = _max_event_bytes()

    now_ms = time.time_ns() // 1_000_000
    sec, ms = divmod(now_ms, 1000)
    t = time.gmtime(sec)
    date = time.strftime("%Y-%m-%d", t)
    timestamp = "%sT%s.%03dZ" % (date, time.strftime("%H:%M:%S", t), ms)
    name_time = "%s.%03dZ" % (time.strftime("%Y%m%dT%H%M%S", t), ms)
    event_id = _uuid7(now_ms)

    head = json.dumps(
        {
            "id": event_id,
            "timestamp": timestamp,
            "node": node,
            "type": event_type,
            "severity": severity,
            "source": source,
            "service": service,
            "correlation_id": correlation_id,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    line = (head[:-1] + ',"payload":' + payload_json + "}\n").encode("utf-8")
    if len(line) > limit:
        raw = os.environ.get("LABMESH_MAX_EVENT_BYTES", "")
        raise EventError(
            "invalid payload: the event file would be %d bytes, over the limit of %d bytes "
            "(LABMESH_MAX_EVENT_BYTES%s, default 65536). Fix: send a smaller payload (it is %d "
            "bytes) or raise LABMESH_MAX_EVENT_BYTES."
            % (len(line), limit, "=" + raw if raw else "", len(payload_json.encode("utf-8")))
        )

    folder = "%s/events/%s/%s" % (data, date, node)
    name = "%s_%s_%s.json" % (name_time, event_type, event_id)
    return _write_durably(folder, name, line)


def list_events(date=None, node=None):
    """The events of one UTC date (default today) as a list of dicts, ordered by file name.

    With node, only that node's folder. Files that do not parse as a JSON object are skipped
    with a warning on stderr. A date without events gives [].
    """
    if date is None or date == "":
        date = time.strftime("%Y-%m-%d", time.gmtime())
    elif isinstance(date, datetime.date):
        date = "%04d-%02d-%02d" % (date.year, date.month, date.day)
    else:
        m = _DATE_RE.fullmatch(date) if isinstance(date, str) else None
        if not m:
            raise EventError(
                "invalid date %s: it must be YYYY-MM-DD (a UTC date). Fix: pass e.g. "
                "'2026-05-12', or nothing for today." % _show(date)
            )
        try:
            datetime.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise EventError(
                "invalid date %s: there is no such day. Fix: pass an existing date as YYYY-MM-DD."
                % _show(date)
            ) from None
    if node is not None and node != "":
        if not isinstance(node, str) or not _is_hostname(node):
            raise EventError(
                "invalid node %s: it must be a valid host name (labels of letters, digits and "
                "'-'). Fix: pass a node folder name, or nothing for all nodes." % _show(node)
            )
    base = os.path.join(_data_dir(), "events", date)
    try:
        nodes = os.listdir(base)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise _os_error(e, "cannot list the events folder", base) from e

    entries = []
    for nd in nodes:
        if nd.startswith(".") or (node and nd != node):
            continue
        folder = os.path.join(base, nd)
        if not os.path.isdir(folder):
            continue
        try:
            names = os.listdir(folder)
        except OSError as e:
            sys.stderr.write("list_events: cannot list %s: %s; skipped\n" % (folder, e.strerror))
            continue
        for name in names:
            if name.startswith(".") or not name.endswith(".json"):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                entries.append((os.fsencode(name), os.fsencode(path), path))
    entries.sort()

    events = []
    for _, _, path in entries:
        try:
            with open(path, "rb") as f:
                event = json.loads(f.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            sys.stderr.write("list_events: skipping %s: %s\n" % (path, e))
            continue
        if not isinstance(event, dict):
            sys.stderr.write("list_events: skipping %s: not a JSON object\n" % path)
            continue
        events.append(event)
    return events
