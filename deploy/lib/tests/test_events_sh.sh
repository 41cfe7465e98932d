#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted scripts for bash -c, expanded there
# Tests for deploy/lib/events.sh. Plain bash; python3 is used only as a JSON checker.
# Run: bash deploy/lib/tests/test_events_sh.sh   (prints "ok - ..." lines and "N passed, M failed")

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIB=$HERE/../events.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export LABMESH_DATA_DIR=$T/data
export LABMESH_NAME=testnode
unset LABMESH_MAX_EVENT_BYTES

# shellcheck source=deploy/lib/events.sh
source "$LIB"

PASS=0
FAIL=0
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
not_ok() {
    echo "not ok - $1"
    [[ -n ${2-} ]] && printf '#   %s\n' "$2"
    FAIL=$((FAIL + 1))
}
check() { # NAME COMMAND...
    local name=$1
    shift
    if "$@"; then ok "$name"; else not_ok "$name" "failed: $*"; fi
}
count_files() { find "$T/data" -type f 2>/dev/null | wc -l; }
tmp_files() { find "$T/data" -name '.*.tmp' 2>/dev/null | wc -l; }
py_field() { # FILE PYTHON-EXPR-ON-e
    python3 -c 'import json,sys; e=json.load(open(sys.argv[1], encoding="utf-8")); print(eval(sys.argv[2]))' "$1" "$2"
}

# --- happy path ------------------------------------------------------------------------------
emit_event "deployment_started" "info" "my-script.sh" "mosquitto" "unique-cid" '{"version": "1.0"}' >"$T/out" 2>"$T/err"
rc=$?
path=$(<"$T/out")
check "emit_event returns 0" test "$rc" -eq 0
check "emit_event writes nothing on stderr" test ! -s "$T/err"
check "printed path is absolute and exists" test -f "$path" -a "${path:0:1}" = /
check "prints exactly one line" test "$(wc -l <"$T/out")" -eq 1
re='^'"$T"'/data/events/([0-9]{4}-[0-9]{2}-[0-9]{2})/testnode/([0-9]{8}T[0-9]{6}\.[0-9]{3}Z)_deployment_started_([0-9a-f-]{36})\.json$'
if [[ $path =~ $re ]]; then
    ok "path layout events/<date>/<node>/<time>_<type>_<id>.json"
    p_date=${BASH_REMATCH[1]} p_time=${BASH_REMATCH[2]} p_id=${BASH_REMATCH[3]}
else
    not_ok "path layout events/<date>/<node>/<time>_<type>_<id>.json" "$path"
    p_date='' p_time='' p_id=''
fi
check "file is one line ending in a single newline" test "$(wc -l <"$path")" -eq 1 -a "$(tail -c1 "$path" | od -An -c | tr -d ' ')" = '\n'
check "file parses with python3 -m json.tool" python3 -m json.tool "$path" /dev/null
keys=$(python3 -c 'import json,sys; print(",".join(k for k, _ in json.load(open(sys.argv[1]), object_pairs_hook=lambda p: p)))' "$path")
check "keys in exact order" test "$keys" = "id,timestamp,node,type,severity,source,service,correlation_id,payload"
content=$(<"$path")
check "payload inserted as the caller's JSON text" test "${content#*\"payload\":}" = '{"version": "1.0"}}'
ts=$(py_field "$path" "e['timestamp']")
id=$(py_field "$path" "e['id']")
check "timestamp is UTC with milliseconds" test -n "$(grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' <<<"$ts")"
check "id is a lowercase UUIDv7 with RFC variant" test -n "$(grep -E '^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' <<<"$id")"
check "id in the file name is the id in the file" test "$id" = "$p_id"
check "date folder is the timestamp's date" test "$p_date" = "${ts:0:10}"
want_time="${ts:0:4}${ts:5:2}${ts:8:2}T${ts:11:2}${ts:14:2}${ts:17:2}.${ts:20:3}Z"
check "name time is the timestamp" test "$p_time" = "$want_time"
id_ms=$((16#${id:0:8}${id:9:4}))
ts_ms=$(python3 -c 'import sys,datetime as d; t=d.datetime.strptime(sys.argv[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=d.timezone.utc); print(round(t.timestamp()*1000))' "$ts")
check "id's first 48 bits are the timestamp's Unix ms" test "$id_ms" = "$ts_ms"
check "fields stored as given" test "$(py_field "$path" "'|'.join([e['node'], e['type'], e['severity'], e['source'], e['service'], e['correlation_id'], e['payload']['version']])")" = "testnode|deployment_started|info|my-script.sh|mosquitto|unique-cid|1.0"
check "no temp files left" test "$(tmp_files)" -eq 0
now_s=$(date -u +%s)
check "timestamp is now" test $(( ts_ms / 1000 - now_s )) -le 1 -a $(( now_s - ts_ms / 1000 )) -le 2

# --- defaults --------------------------------------------------------------------------------
p1=$(emit_event service_recovered warning healthcheck.sh all)
check "payload omitted -> {} and correlation_id omitted -> \"\"" test "$(py_field "$p1" "(e['payload'], e['correlation_id'])")" = "({}, '')"
p2=$(emit_event service_recovered warning healthcheck.sh all "" "")
check "empty payload argument -> {}" test "$(py_field "$p2" "e['payload']")" = "{}"
p3=$(emit_event service_recovered warning healthcheck.sh all "" $'  \n ')
check "blank payload argument -> {}" test "$(py_field "$p3" "e['payload']")" = "{}"
check "service may be 'all'" test "$(py_field "$p1" "e['service']")" = all

# --- escaping --------------------------------------------------------------------------------
src=$'it\'s "quoted" \\back\\slash\\ é 日本 😀 /'
cid='cid "x" \n not-a-newline \u0041'
p4=$(emit_event build_completed error "$src" "svc-\"1\"" "$cid" '{}')
check "escaped source round-trips" python3 -c 'import json,sys; e=json.load(open(sys.argv[1], encoding="utf-8")); sys.exit(e["source"] != sys.argv[2])' "$p4" "$src"
check "escaped correlation_id round-trips" python3 -c 'import json,sys; e=json.load(open(sys.argv[1], encoding="utf-8")); sys.exit(e["correlation_id"] != sys.argv[2])' "$p4" "$cid"
check "escaped service round-trips" test "$(py_field "$p4" "e['service']")" = 'svc-"1"'
check "non-ASCII written as UTF-8, not \\u escapes" grep -q '日本 😀' "$p4"

# --- payload: valid JSON variants ------------------------------------------------------------
payload=$'{\n  "a": [1, -0.5, 2e10, 3E-2, 0, -12.75e+3, true, false, null, [], {}],\n  "s": "x\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00 é",\n  "o": {"k": {"k": [[[{"deep": "yes"}]]]}},\n  "": "empty key", "del": "\x7f"\n}\n'
p5=$(emit_event test_completed info ci.sh all run-1 "$payload" 2>"$T/err")
check "complex valid payload accepted" test -f "$p5"
check "multi-line payload stored on one line" test "$(wc -l <"$p5")" -eq 1 -a "$(tr -cd '\t\r' <"$p5" | wc -c)" -eq 0
p5b=$(emit_event test_completed info ci.sh all run-1 $'\n\t {\n\t"a" :\r\n [1 ,\n  2],  "b": "x  y"\n}\n\n')
check "payload trimmed; whitespace runs with newlines or tabs removed, spaces kept" test "$(sed 's/.*"payload"://' "$p5b")" = '{"a" :[1 ,2],  "b": "x  y"}}'
check "payload semantics preserved" python3 -c '
import json,sys
e=json.load(open(sys.argv[1], encoding="utf-8"))
want=json.loads(sys.argv[2])
sys.exit(e["payload"] != want)' "$p5" "$payload"
for good in '{}' ' { } ' '{"a":{}}' '{"a":[]}' '{"a":[{"b":[1,{"c":null}]}]}' '{"n":-0}' '{"n":1.5e-400}' '{"n":1.7976931348623157e308}' '{"x":"\u20ac"}' '{"k":"v","k2":"v2"}'; do
    if emit_event a_b info s t "" "$good" >/dev/null 2>"$T/err"; then ok "accepts payload $good"; else not_ok "accepts payload $good" "$(<"$T/err")"; fi
done

# --- rejections: status 2, a message naming the field and the fix, no file, no temp file ------
expect_reject() { # NAME FIELD-WORD ARGS...
    local name=$1 word=$2 before after rc
    shift 2
    before=$(count_files)
    emit_event "$@" >"$T/out" 2>"$T/err"
    rc=$?
    after=$(count_files)
    if [[ $rc -eq 2 && $before -eq $after && ! -s $T/out ]] && grep -q "^emit_event: .*$word" "$T/err" && grep -q 'Fix: ' "$T/err"; then
        ok "rejects $name"
    else
        not_ok "rejects $name" "rc=$rc files $before->$after stdout=$(<"$T/out") stderr=$(<"$T/err")"
    fi
}
expect_reject "type with uppercase" "invalid type" Deployment_started info s svc
expect_reject "type with dash" "invalid type" deployment-started info s svc
expect_reject "type with double underscore" "invalid type" deployment__started info s svc
expect_reject "type with trailing underscore" "invalid type" deployment_ info s svc
expect_reject "type starting with a digit" "invalid type" 1deploy info s svc
expect_reject "empty type" "invalid type" "" info s svc
expect_reject "type longer than 64" "invalid type" "$(printf 'a%.0s' {1..65})" info s svc
expect_reject "bad severity" "invalid severity" deploy warn s svc
expect_reject "uppercase severity" "invalid severity" deploy INFO s svc
expect_reject "empty source" "invalid source" deploy info "" svc
expect_reject "empty service" "invalid service" deploy info s ""
expect_reject "control char in source" "invalid source.*U+000A" deploy info $'a\nb' svc
expect_reject "tab in service" "invalid service.*U+0009" deploy info s $'a\tb'
expect_reject "DEL in correlation_id" "invalid correlation_id.*U+007F" deploy info s svc $'a\x7fb'
expect_reject "escape char in correlation_id" "invalid correlation_id.*U+001B" deploy info s svc $'\e[31m'
expect_reject "source over 256 bytes" "invalid source.*257 bytes" deploy info "$(printf 'x%.0s' {1..257})" svc
expect_reject "correlation_id over 256 bytes (UTF-8)" "invalid correlation_id.*258 bytes" deploy info s svc "$(printf 'é%.0s' {1..129})"
expect_reject "invalid UTF-8 in source" "invalid source.*UTF-8" deploy info $'bad\xff' svc
expect_reject "too few arguments" "expected 4 to 6 arguments" deploy info s
expect_reject "too many arguments" "expected 4 to 6 arguments" deploy info s svc cid '{}' extra
expect_reject "payload array" "invalid payload: .*not an array" deploy info s svc c '[1,2]'
expect_reject "payload string" "invalid payload: .*not a string" deploy info s svc c '"x"'
expect_reject "payload number" "invalid payload: .*not a number" deploy info s svc c '42'
expect_reject "payload null" "invalid payload: .*not a literal" deploy info s svc c 'null'
expect_reject "payload trailing comma in object" "invalid payload: trailing comma before '}'" deploy info s svc c '{"a":1,}'
expect_reject "payload trailing comma in array" "invalid payload: trailing comma before ']'" deploy info s svc c '{"a":[1,2,]}'
expect_reject "payload trailing garbage" "invalid payload: trailing data" deploy info s svc c '{"a":1} x'
expect_reject "payload two objects" "invalid payload: trailing data" deploy info s svc c '{}{}'
expect_reject "payload unterminated string" "invalid payload: unterminated string" deploy info s svc c '{"a":"abc}'
expect_reject "payload unterminated object" "invalid payload: unexpected end of text" deploy info s svc c '{"a":1'
expect_reject "payload unterminated array" "invalid payload: unexpected end of text" deploy info s svc c '{"a":[1'
expect_reject "payload bad escape" "invalid payload: invalid escape" deploy info s svc c '{"a":"\x41"}'
expect_reject "payload short \\u escape" "invalid payload: invalid escape" deploy info s svc c '{"a":"\u12"}'
expect_reject "payload lone surrogate" "invalid payload: lone UTF-16 surrogate" deploy info s svc c '{"a":"\udc00"}'
expect_reject "payload raw newline in string" "invalid payload: control character U+000A inside a string" deploy info s svc c $'{"a":"x\ny"}'
expect_reject "payload raw tab in string" "invalid payload: control character U+0009" deploy info s svc c $'{"a":"\t"}'
expect_reject "payload single quotes" "invalid payload: expected a string key or '}', found '''" deploy info s svc c "{'a':1}"
expect_reject "payload unquoted key" "invalid payload: expected a string key" deploy info s svc c '{a:1}'
expect_reject "payload missing colon" "invalid payload: expected ':'" deploy info s svc c '{"a" 1}'
expect_reject "payload missing comma" "invalid payload: expected ',' or '}'" deploy info s svc c '{"a":1 "b":2}'
expect_reject "payload leading zero" "invalid payload: expected ',' or '}'" deploy info s svc c '{"a":01}'
expect_reject "payload bare dot number" "invalid payload: expected a value, found '.'" deploy info s svc c '{"a":.5}'
expect_reject "payload 1. number" "invalid payload: expected ',' or '}', found '.'" deploy info s svc c '{"a":1.}'
expect_reject "payload minus alone" "invalid payload: invalid number" deploy info s svc c '{"a":-}'
expect_reject "payload NaN" "invalid payload: expected a value, found 'N'" deploy info s svc c '{"a":NaN}'
expect_reject "payload bad literal" "invalid payload: unexpected 't'" deploy info s svc c '{"a":tru}'
expect_reject "payload number out of range" "invalid payload: number '1e400' is out of range" deploy info s svc c '{"a":1e400}'
expect_reject "payload mismatched brackets" "invalid payload: expected ',' or ']'" deploy info s svc c '{"a":[1}'
expect_reject "payload nested too deep" "invalid payload: it nests deeper than 64" deploy info s svc c "$(printf '{"a":%.0s' {1..65})1$(printf '}%.0s' {1..65})"
expect_reject "payload invalid UTF-8" "invalid payload: it is not valid UTF-8" deploy info s svc c $'{"a":"\xc3("}'
expect_reject "payload vertical tab as whitespace" "invalid payload: expected a string key or '}', found control character U+000B" deploy info s svc c $'{\v}'
LABMESH_MAX_EVENT_BYTES=200 expect_reject "event over LABMESH_MAX_EVENT_BYTES=200" "invalid payload: the event file would be [0-9][0-9]* bytes, over the limit of 200" deploy info s svc c "{\"big\":\"$(printf 'x%.0s' {1..100})\"}"
LABMESH_MAX_EVENT_BYTES=abc expect_reject "bad LABMESH_MAX_EVENT_BYTES" "invalid LABMESH_MAX_EVENT_BYTES" deploy info s svc
LABMESH_NAME=bad_name expect_reject "invalid node name via LABMESH_NAME" "invalid node name 'bad_name' (from LABMESH_NAME)" deploy info s svc
LABMESH_NAME=-lead expect_reject "node name starting with '-'" "invalid node name" deploy info s svc
LABMESH_NAME=a..b expect_reject "node name with an empty label" "invalid node name" deploy info s svc
LABMESH_NAME="$(printf 'a%.0s' {1..64})" expect_reject "node name label over 63 chars" "invalid node name" deploy info s svc
check "no temp files left after rejections" test "$(tmp_files)" -eq 0

# exact size limit: a file of exactly LABMESH_MAX_EVENT_BYTES bytes is accepted, one more is not
size=$(wc -c <"$p1")
if LABMESH_MAX_EVENT_BYTES=$size emit_event service_recovered warning healthcheck.sh all >/dev/null 2>"$T/err"; then
    ok "event of exactly LABMESH_MAX_EVENT_BYTES bytes accepted"
else not_ok "event of exactly LABMESH_MAX_EVENT_BYTES bytes accepted" "$(<"$T/err")"; fi
LABMESH_MAX_EVENT_BYTES=$((size - 1)) expect_reject "event one byte over the limit" "would be $size bytes, over the limit of $((size - 1))" service_recovered warning healthcheck.sh all

# --- fallbacks without bash 5's EPOCHREALTIME and SRANDOM (date +%s%N, od /dev/urandom) ---------
out=$(unset EPOCHREALTIME SRANDOM; emit_event fallback_test info t.sh all 2>&1)
if [[ -f $out ]]; then
    fid=$(py_field "$out" "e['id']")
    fts=$(py_field "$out" "e['timestamp']")
    fms=$(python3 -c 'import sys,datetime as d; t=d.datetime.strptime(sys.argv[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=d.timezone.utc); print(round(t.timestamp()*1000))' "$fts")
    if [[ $fid =~ ^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ && $((16#${fid:0:8}${fid:9:4})) == "$fms" && $(( fms / 1000 - $(date +%s) )) -le 1 ]]; then
        ok "works without EPOCHREALTIME and SRANDOM"
    else not_ok "works without EPOCHREALTIME and SRANDOM" "$fid $fts"; fi
else not_ok "works without EPOCHREALTIME and SRANDOM" "$out"; fi

# --- node name and data folder defaults --------------------------------------------------------
p6=$(LABMESH_NAME='' emit_event node_online info t.sh all)
host=${HOSTNAME:-$(uname -n)}
check "node defaults to the host name" test "$(py_field "$p6" "e['node']")" = "$host" -a -f "$T/data/events/${p_date}/$host/${p6##*/}"
check "mixed-case dotted node names accepted" test -f "$(LABMESH_NAME=Saturn.lan-1 emit_event node_online info t.sh all)"
mkdir -p "$T/rel"
p7=$(cd "$T/rel" && LABMESH_DATA_DIR=rel-data/ emit_event node_online info t.sh all)
check "relative LABMESH_DATA_DIR printed as an absolute path" test "${p7#"$T/rel/rel-data/events/"}" != "$p7" -a -f "$p7"
if (( EUID == 0 )); then
    check "root default data folder is /var/lib/labmesh" bash -c 'source "$1"; _lm_fn=t; unset LABMESH_DATA_DIR; _labmesh_data_dir && test "$_lm_data" = /var/lib/labmesh' _ "$LIB"
    if command -v setpriv >/dev/null; then
        chmod 755 "$T"
        mkdir -p "$T/home" && chown 65534:65534 "$T/home"
        out=$(env -u LABMESH_DATA_DIR -u XDG_DATA_HOME HOME="$T/home" LABMESH_NAME=nobodynode setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'source "$1" && emit_event user_test info t.sh all' _ "$LIB" 2>&1)
        check "non-root default data folder is ~/.local/share/labmesh" test "${out#"$T/home/.local/share/labmesh/events/"}" != "$out" -a -f "$out"
        out=$(env -u LABMESH_DATA_DIR XDG_DATA_HOME="$T/home/xdg" HOME="$T/home" LABMESH_NAME=nobodynode setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'source "$1" && emit_event user_test info t.sh all' _ "$LIB" 2>&1)
        check "non-root data folder honours XDG_DATA_HOME" test "${out#"$T/home/xdg/labmesh/events/"}" != "$out" -a -f "$out"
        mkdir -p "$T/ro/events" && chmod 555 "$T/ro/events"
        out=$(LABMESH_DATA_DIR="$T/ro" setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'source "$1"; emit_event user_test info t.sh all; echo "rc=$?"' _ "$LIB" 2>&1)
        if [[ $out == *"rc=1"* && $out == *"$T/ro/events/"* ]]; then ok "unwritable data folder: status 1, message names the path"; else not_ok "unwritable data folder: status 1, message names the path" "$out"; fi
    fi
else
    check "non-root default data folder honours XDG_DATA_HOME" bash -c 'source "$1"; _lm_fn=t; unset LABMESH_DATA_DIR; XDG_DATA_HOME=/x/y _labmesh_data_dir && test "$_lm_data" = /x/y/labmesh' _ "$LIB"
fi

# --- the caller's shell is left alone ----------------------------------------------------------
(
    set -eu -o pipefail
    shopt -s nocasematch nullglob
    before_flags=$- before_opts=$(set +o) before_shopt=$(shopt -p)
    # shellcheck disable=SC2050 # a known match for BASH_REMATCH
    [[ abc =~ (b)(c) ]]
    before_vars=$(compgen -v | grep -v -e '^BASH_' -e '^_$' -e '^before_' -e '^rc$' -e '^PIPESTATUS$' | sort)
    emit_event state_test info t.sh all >/dev/null
    emit_event Bad_Type info t.sh all 2>/dev/null || rc=$?
    list_events >/dev/null
    list_events bad-date 2>/dev/null || true
    after_flags=$- after_opts=$(set +o) after_shopt=$(shopt -p)
    after_vars=$(compgen -v | grep -v -e '^BASH_' -e '^_$' -e '^before_' -e '^after_' -e '^rc$' -e '^PIPESTATUS$' | sort)
    [[ $before_flags == "$after_flags" ]] || { echo "flags $before_flags -> $after_flags"; exit 1; }
    [[ $before_opts == "$after_opts" ]] || { echo "set -o changed"; exit 1; }
    [[ $before_shopt == "$after_shopt" ]] || { echo "shopt changed"; exit 1; }
    [[ $before_vars == "$after_vars" ]] || { echo "variables leaked: $(diff <(echo "$before_vars") <(echo "$after_vars") | tr '\n' ' ')"; exit 1; }
    [[ ${BASH_REMATCH[*]} == "bc b c" ]] || { echo "BASH_REMATCH changed: ${BASH_REMATCH[*]}"; exit 1; }
    [[ ${rc-} == 2 ]] || { echo "rc=${rc-}"; exit 1; }
    echo survived
) >"$T/state" 2>&1
check "set -eu, pipefail, shopts, variables and BASH_REMATCH unchanged" test "$(<"$T/state")" = survived
[[ $(<"$T/state") == survived ]] || echo "#   $(<"$T/state")"
( set -e; emit_event Bad info t.sh all 2>/dev/null; echo "not reached" ) >"$T/state"
check "under set -e, a failing emit_event stops the caller as set -e should (no exit inside)" test ! -s "$T/state"
(
    set -x
    emit_event trace_test info t.sh all >/dev/null
) 2>"$T/trace"
check "caller's set -x does not trace the library internals" test "$(grep -c '_lm_' "$T/trace")" -le 2
out=$(bash -c 'emit_event() { :; }; source "$1"; type -t _labmesh_emit; compgen -v | grep -c "^_labmesh"' _ "$LIB")
check "sourcing defines functions only" test "$out" = $'function\n0'
out=$(bash "$LIB" 2>&1; echo "rc=$?")
check "running the library directly explains it must be sourced" test -n "$(grep -e 'is a library' <<<"$out")" -a -n "$(grep -e 'rc=2' <<<"$out")"

# --- concurrency: parallel writers never collide -------------------------------------------------
before=$(count_files)
for i in $(seq 1 20); do emit_event parallel_test info t.sh all "" "{\"i\":$i}" >/dev/null & done
wait
check "20 parallel emits give 20 files" test $(( $(count_files) - before )) -eq 20

# --- list_events ---------------------------------------------------------------------------------
export LABMESH_DATA_DIR=$T/list
for n in 1 2 3; do
    LABMESH_NAME=alpha emit_event list_test info t.sh all "" "{\"seq\":\"a$n\"}" >/dev/null
    sleep 0.002
    LABMESH_NAME=beta emit_event list_test info t.sh all "" "{\"seq\":\"b$n\"}" >/dev/null
    sleep 0.002  # same-millisecond events order by type, then random id
done
list_events >"$T/list.out" 2>"$T/list.err"
rc=$?
check "list_events returns 0" test "$rc" -eq 0 -a ! -s "$T/list.err"
check "list_events prints 6 lines" test "$(wc -l <"$T/list.out")" -eq 6
check "every listed line parses" python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$T/list.out"
order=$(python3 -c 'import json,sys; print(" ".join(json.loads(l)["payload"]["seq"] for l in open(sys.argv[1])))' "$T/list.out")
check "list_events interleaves nodes in file-name order" test "$order" = "a1 b1 a2 b2 a3 b3"
today=$(date -u +%F)
day=$T/list/events/$today
# hand-made names that test byte order across nodes, and files the listing must ignore
printf '%s\n' '{"hand":"first"}' >"$day/beta/00000000T000000.000Z_zz_x.json"
printf '%s' '{"hand":"no newline"}' >"$day/alpha/99999999T999999.999Z_a_y.json"
printf '%s\n' '{"ignored":"dot"}' >"$day/alpha/.hidden.json"
printf '%s\n' '{"ignored":"tmp"}' >"$day/alpha/.20260101T000000.000Z_x_y.json.1234.tmp"
printf '%s\n' '{"ignored":"txt"}' >"$day/alpha/notes.txt"
mkdir -p "$day/.staging" && printf '%s\n' '{"ignored":"dotdir"}' >"$day/.staging/20260101T000000.000Z_x_y.json"
list_events "$today" >"$T/list2.out"
check "list_events ignores dot files, dot folders and non-.json files" test "$(grep -c ignored "$T/list2.out")" -eq 0
check "list_events sorts by file name across nodes" test "$(head -n1 "$T/list2.out")" = '{"hand":"first"}' -a "$(tail -n1 "$T/list2.out")" = '{"hand":"no newline"}'
check "list_events ends every event with a newline" test "$(wc -l <"$T/list2.out")" -eq 8
list_events "$today" beta >"$T/list3.out"
check "list_events DATE NODE lists one node" test "$(wc -l <"$T/list3.out")" -eq 4 -a "$(grep -c '"node":"alpha"' "$T/list3.out")" -eq 0
out=$(list_events 1999-01-01; echo "rc=$?")
check "missing date folder: empty output, status 0" test "$out" = "rc=0"
for bad in 2026-5-12 20260512 2026-13-01 2026-02-30 2026-05-12T00:00 yesterday; do
    list_events "$bad" >"$T/out" 2>"$T/err"
    rc=$?
    if [[ $rc -eq 2 && ! -s $T/out ]] && grep -q "^list_events: invalid date" "$T/err"; then ok "list_events rejects date $bad"; else not_ok "list_events rejects date $bad" "rc=$rc $(<"$T/err")"; fi
done
check "list_events accepts a leap day" list_events 2024-02-29

echo "$PASS passed, $FAIL failed"
(( FAIL == 0 ))
