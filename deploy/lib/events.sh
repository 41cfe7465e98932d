# shellcheck shell=bash disable=SC1003  # '\' is a string holding one backslash
# labmesh events library for bash scripts (bash >= 4; on bash >= 5.1 the clock, the random
# bits, the validation and the JSON are all builtins: sync, mv, sync are the only processes).
#
#   source deploy/lib/events.sh
#   emit_event TYPE SEVERITY SOURCE SERVICE [CORRELATION_ID] [PAYLOAD_JSON]
#       -> prints the absolute path of the stored event file; status 0
#       -> status 2 and a message on stderr for invalid input, 1 for disk or system problems
#   list_events [YYYY-MM-DD [NODE]]
#       -> prints each event file of that UTC date (default: today), one per line, ordered by
#          file name across all node folders (or only NODE's folder)
#
# Writes the labmesh on-disk event format directly (no agent needed):
#   <data>/events/<YYYY-MM-DD>/<node>/<YYYYMMDDTHHMMSS.mmmZ>_<type>_<uuidv7>.json
# with one line of JSON (keys id, timestamp, node, type, severity, source, service,
# correlation_id, payload; compact, except that the payload keeps the caller's spaces) and a
# trailing newline, written to a dot-prefixed temp file in the same folder, fsynced, renamed
# into place, and the folder fsynced.
#
# Environment: LABMESH_DATA_DIR, LABMESH_NAME, LABMESH_MAX_EVENT_BYTES (see README.md).
#
# Being sourced, the functions never call `exit`, restore the caller's shell options (set -e,
# -u, -x, pipefail, noclobber, ...; shopt nocasematch, nullglob, ...) and BASH_REMATCH, and
# define no global variables: everything else is `local` or a function named _labmesh_*.

if [ -z "${BASH_VERSION-}" ]; then
    echo "events.sh: this library needs bash >= 4; source it from a bash script (#!/usr/bin/env bash)" >&2
    # shellcheck disable=SC2317 # exit: only when run, not sourced
    return 2 2>/dev/null || exit 2
fi

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    echo "events.sh is a library: load it with 'source ${BASH_SOURCE[0]}' and call emit_event / list_events" >&2
    exit 2
fi

if [ "${BASH_VERSINFO[0]}" -lt 4 ]; then
    emit_event() {
        echo "emit_event: events.sh needs bash >= 4, this is bash $BASH_VERSION. Fix: install a newer bash (macOS: 'brew install bash') and run the script with it (#!/usr/bin/env bash)." >&2
        return 2
    }
    list_events() {
        echo "list_events: events.sh needs bash >= 4, this is bash $BASH_VERSION. Fix: install a newer bash (macOS: 'brew install bash') and run the script with it (#!/usr/bin/env bash)." >&2
        return 2
    }
    emit_event
    return 2
fi

# Aliases of an interactive shell (alias mv='mv -i', ...) must not leak into the definitions.
if shopt -q expand_aliases; then
    _labmesh_expand_aliases_was_on=1
    shopt -u expand_aliases
fi

# ---------------------------------------------------------------------------------------------
# Caller-state protection. The public functions declare the _lm_saved_* locals and call these.

_labmesh_enter() {
    _lm_saved_flags=$-
    _lm_saved_pipefail=0
    [[ -o pipefail ]] && _lm_saved_pipefail=1
    _lm_saved_shopts=''
    local o
    for o in nocasematch nocaseglob failglob nullglob dotglob; do
        if shopt -q "$o"; then _lm_saved_shopts+="$o "; fi
    done
    shopt -u nocasematch nocaseglob failglob nullglob dotglob
    _lm_saved_rematch_set=0
    if declare -p BASH_REMATCH >/dev/null 2>&1; then
        _lm_saved_rematch_set=1
        _lm_saved_rematch=("${BASH_REMATCH[@]}")
    fi
    set +aeEfuCkT +o pipefail
}

_labmesh_leave() {
    # BASH_REMATCH is writable from bash 5.1 on; older versions keep our last match.
    if (( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )); then
        if (( _lm_saved_rematch_set )); then
            BASH_REMATCH=("${_lm_saved_rematch[@]}")
        else
            unset BASH_REMATCH
        fi
    fi
    (( _lm_saved_pipefail )) && set -o pipefail
    # set flags first: the [[ ]] tests must run before a caller's nocasematch comes back
    [[ $_lm_saved_flags == *a* ]] && set -a
    [[ $_lm_saved_flags == *e* ]] && set -e
    [[ $_lm_saved_flags == *E* ]] && set -E
    [[ $_lm_saved_flags == *f* ]] && set -f
    [[ $_lm_saved_flags == *u* ]] && set -u
    [[ $_lm_saved_flags == *C* ]] && set -C
    [[ $_lm_saved_flags == *k* ]] && set -k
    [[ $_lm_saved_flags == *T* ]] && set -T
    shopt -u nocasematch nocaseglob failglob nullglob dotglob
    # shellcheck disable=SC2086 # a list of option names
    [[ -n $_lm_saved_shopts ]] && shopt -s $_lm_saved_shopts
    [[ $_lm_saved_flags != *x* ]] || set -x
    return 0
}

# ---------------------------------------------------------------------------------------------
# Public API

emit_event() {
    # xtrace off first (restored on the way out) so a caller's `set -x` does not dump our internals.
    { local _lm_x=$-; set +x; } 2>/dev/null
    local _lm_saved_flags _lm_saved_pipefail _lm_saved_shopts _lm_saved_rematch_set
    local -a _lm_saved_rematch=()
    local _lm_fn=emit_event _lm_rc=0
    _labmesh_enter
    _lm_saved_flags=$_lm_x
    local LC_ALL=C IFS=$' \t\n'
    _labmesh_emit "$@" || _lm_rc=$?
    _labmesh_leave
    return "$_lm_rc"
}

list_events() {
    { local _lm_x=$-; set +x; } 2>/dev/null
    local _lm_saved_flags _lm_saved_pipefail _lm_saved_shopts _lm_saved_rematch_set
    local -a _lm_saved_rematch=()
    local _lm_fn=list_events _lm_rc=0
    _labmesh_enter
    _lm_saved_flags=$_lm_x
    local LC_ALL=C IFS=$' \t\n' GLOBSORT=name
    _labmesh_list "$@" || _lm_rc=$?
    _labmesh_leave
    return "$_lm_rc"
}

# ---------------------------------------------------------------------------------------------
# Helpers. They run with LC_ALL=C (so ${#x} counts bytes and regexes see bytes) and the caller's
# options neutralised; they return results in variables their caller declared `local`.

_labmesh_err() {
    printf '%s: %s\n' "$_lm_fn" "$*" >&2
}

# _labmesh_show VALUE -> _lm_shown: the value quoted for a message, shortened when long.
_labmesh_show() {
    local v=$1 more=''
    if (( ${#v} > 60 )); then
        v=${v:0:60}
        more="... (${#1} bytes)"
    fi
    if [[ $v == *[$'\x01'-$'\x1f\x7f']* || $v == *"'"* ]] || ! _labmesh_utf8 "$v"; then
        printf -v _lm_shown '%q' "$v"
    else
        _lm_shown="'$v'"
    fi
    _lm_shown+=$more
}

# _labmesh_utf8 TEXT: status 0 when TEXT is valid UTF-8.
_labmesh_utf8() {
    [[ $1 != *[$'\x80'-$'\xff']* ]] && return 0
    local re=$'^([\x01-\x7f]+|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf][\x80-\xbf]|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf][\x80-\xbf]|[\xf1-\xf3][\x80-\xbf][\x80-\xbf][\x80-\xbf]|\xf4[\x80-\x8f][\x80-\xbf][\x80-\xbf])*$'
    [[ $1 =~ $re ]]
}

# _labmesh_text FIELD VALUE REQUIRED EXAMPLE: source, service, correlation_id.
_labmesh_text() {
    local f=$1 v=$2 req=$3 ex=$4 _lm_shown c code pre re=$'[\x01-\x1f\x7f]'
    if [[ -z $v ]]; then
        (( req )) || return 0
        _labmesh_err "invalid $f '': it is empty. Fix: pass a non-empty $f, e.g. $ex."
        return 2
    fi
    _labmesh_show "$v"
    if (( ${#v} > 256 )); then
        _labmesh_err "invalid $f $_lm_shown: it is ${#v} bytes long, the limit is 256 bytes. Fix: shorten it."
        return 2
    fi
    if [[ $v =~ $re ]]; then
        c=${BASH_REMATCH[0]}
        pre=${v%%"$c"*}
        printf -v code 'U+%04X' "'$c"
        _labmesh_err "invalid $f $_lm_shown: it contains the control character $code at byte $(( ${#pre} + 1 )). Fix: remove control characters (newlines, tabs, escape codes) from it."
        return 2
    fi
    if ! _labmesh_utf8 "$v"; then
        _labmesh_err "invalid $f $_lm_shown: it is not valid UTF-8 text. Fix: convert it to UTF-8 (e.g. with iconv -t UTF-8)."
        return 2
    fi
    return 0
}

# _labmesh_hostname NAME: status 0 for a valid host name (RFC 1123 labels).
_labmesh_hostname() {
    local h=$1 label re='^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$'
    (( ${#h} >= 1 && ${#h} <= 253 )) || return 1
    [[ $h == .* || $h == *. || $h == *..* ]] && return 1
    while :; do
        label=${h%%.*}
        (( ${#label} <= 63 )) || return 1
        [[ $label =~ $re ]] || return 1
        [[ $h == *.* ]] || return 0
        h=${h#*.}
    done
}

# _labmesh_node -> _lm_node
_labmesh_node() {
    local from='LABMESH_NAME' _lm_shown
    _lm_node=${LABMESH_NAME-}
    if [[ -z $_lm_node ]]; then
        from='the host name'
        _lm_node=${HOSTNAME-}
        if [[ -z $_lm_node ]]; then
            _lm_node=$(command uname -n 2>/dev/null) || _lm_node=''
        fi
    fi
    if ! _labmesh_hostname "$_lm_node"; then
        _labmesh_show "$_lm_node"
        _labmesh_err "invalid node name $_lm_shown (from $from): it must be a valid host name: 1-253 characters, dot-separated labels of 1-63 ASCII letters, digits or '-', not starting or ending with '-'. Fix: set LABMESH_NAME to a valid name, e.g. export LABMESH_NAME=saturn."
        return 2
    fi
    return 0
}

# _labmesh_data_dir -> _lm_data (absolute, no trailing slash; not created here)
_labmesh_data_dir() {
    local d=${LABMESH_DATA_DIR-} x
    if [[ -z $d ]]; then
        if (( EUID == 0 )); then
            d=/var/lib/labmesh
        else
            x=${XDG_DATA_HOME-}
            [[ $x == /* ]] || x=''   # XDG: relative paths are ignored
            if [[ -z $x ]]; then
                if [[ -z ${HOME-} ]]; then
                    _labmesh_err "cannot find the data folder: HOME is not set. Fix: set LABMESH_DATA_DIR (e.g. export LABMESH_DATA_DIR=/var/lib/labmesh)."
                    return 2
                fi
                x=$HOME/.local/share
            fi
            d=$x/labmesh
        fi
    fi
    [[ $d == /* ]] || d=$PWD/$d
    while [[ $d == */ && $d != / ]]; do d=${d%/}; done
    [[ $d == / ]] && d=''
    _lm_data=$d
    return 0
}

# _labmesh_now -> _lm_sec, _lm_ms (Unix seconds, milliseconds)
_labmesh_now() {
    local t
    if [[ -n ${EPOCHREALTIME-} ]]; then
        t=$EPOCHREALTIME                      # "1715515500.123456" (',' in some locales)
        _lm_sec=${t%%[!0-9]*}
        t=${t#*[!0-9]}000
        _lm_ms=$(( 10#${t:0:3} ))
        return 0
    fi
    t=$(command date +%s%N 2>/dev/null) || t=''
    if [[ $t =~ ^[0-9]{19,}$ ]]; then         # GNU date
        _lm_sec=${t:0:${#t}-9}
        _lm_ms=$(( 10#${t:${#t}-9:3} ))
        return 0
    fi
    t=$(command perl -MTime::HiRes=time -e 'printf "%.3f\n", time' 2>/dev/null) || t=''
    if [[ $t =~ ^([0-9]+)\.([0-9]{3})$ ]]; then
        _lm_sec=${BASH_REMATCH[1]}
        _lm_ms=$(( 10#${BASH_REMATCH[2]} ))
        return 0
    fi
    _labmesh_err "cannot read the clock with millisecond precision. Fix: use bash >= 5, GNU date, or install perl."
    return 1
}

# _labmesh_civil SECONDS MS -> _lm_date (YYYY-MM-DD), _lm_ts (RFC 3339), _lm_fts (file-name time)
_labmesh_civil() {
    local s=$1 ms=$2 days sod z era doe yoe y doy mp d m
    days=$(( s / 86400 )); sod=$(( s % 86400 ))
    if (( sod < 0 )); then (( days -= 1, sod += 86400 )); fi
    # civil_from_days (H. Hinnant), proleptic Gregorian, UTC.
    z=$(( days + 719468 ))
    era=$(( (z >= 0 ? z : z - 146096) / 146097 ))
    doe=$(( z - era * 146097 ))
    yoe=$(( (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365 ))
    y=$(( yoe + era * 400 ))
    doy=$(( doe - (365 * yoe + yoe / 4 - yoe / 100) ))
    mp=$(( (5 * doy + 2) / 153 ))
    d=$(( doy - (153 * mp + 2) / 5 + 1 ))
    m=$(( mp < 10 ? mp + 3 : mp - 9 ))
    (( m <= 2 )) && (( y += 1 ))
    printf -v _lm_date '%04d-%02d-%02d' "$y" "$m" "$d"
    printf -v _lm_ts '%sT%02d:%02d:%02d.%03dZ' "$_lm_date" $(( sod / 3600 )) $(( sod / 60 % 60 )) $(( sod % 60 )) "$ms"
    printf -v _lm_fts '%04d%02d%02dT%02d%02d%02d.%03dZ' "$y" "$m" "$d" $(( sod / 3600 )) $(( sod / 60 % 60 )) $(( sod % 60 )) "$ms"
}

# _labmesh_random -> _lm_r (array of 4 random 32-bit numbers)
_labmesh_random() {
    # SRANDOM (bash >= 5.1) reads 32 bits from the kernel's CSPRNG; unset, it is just empty.
    if (( BASH_VERSINFO[0] > 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] >= 1) )) && [[ -n ${SRANDOM-} ]]; then
        _lm_r=("$SRANDOM" "$SRANDOM" "$SRANDOM" "$SRANDOM")
        return 0
    fi
    local t
    t=$(command od -An -N16 -tu4 /dev/urandom 2>/dev/null) || t=''
    # shellcheck disable=SC2206 # split the four numbers
    _lm_r=($t)
    if (( ${#_lm_r[@]} != 4 )); then
        _labmesh_err "cannot read random bytes from /dev/urandom with od. Fix: use bash >= 5.1, or make /dev/urandom and od available."
        return 1
    fi
    return 0
}

# _labmesh_json_error DETAIL [HINT]: sets _lm_why, with the position of the rest $s in the text.
_labmesh_json_error() {
    _lm_why="$1 at byte $(( n - ${#s} + 1 ))${2:+ ($2)}"
}

# _labmesh_json_expect: what state $st expects (for messages).
_labmesh_json_expect() {
    case $st in
        S) _lm_expect="'{'" ;;
        k) _lm_expect="a string key or '}'" ;;
        K) _lm_expect="a string key" ;;
        :) _lm_expect="':' after the key" ;;
        V) _lm_expect="a value" ;;
        v) _lm_expect="a value or ']'" ;;
        C) if [[ ${stack: -1} == '{' ]]; then _lm_expect="',' or '}'"; else _lm_expect="',' or ']'"; fi ;;
        E) _lm_expect="the end of the text after the closing '}'" ;;
    esac
}

# _labmesh_json_fast TEXT: status 0 when TEXT is certainly one valid JSON object; status 1 means
# "invalid, or not sure": _labmesh_json_object (token by token, precise messages) then decides.
# It runs a fixed number of whole-text operations (no loop per token or per string):
#  1. escaped \\ and \" become '@' (invalid outside strings), then the text is split on '"':
#     odd fields are string contents (checked together: no control characters, valid escapes),
#     even fields are the structure; joined with \x01 for each string they form a skeleton;
#  2. one regex checks the skeleton's tokens (punctuation, whitespace, \x01, numbers, literals,
#     each number or literal followed by punctuation); numbers and literals become 'n';
#  3. the skeleton, wrapped as the value of a key ({k...}), is reduced with the JSON grammar run
#     backwards: s: -> k (key), s -> n, kn -> m (member), m,m -> m, {m} {} -> n, n,n -> n and
#     [n] [] -> n. kn always becomes m before n,n can touch it, so n,n only joins array elements;
#     valid JSON ends as a single n.
_labmesh_json_fast() {
    local t=$1 sk strs prev passes=0 bs='\' q='"' ws=$' \t\n\r' S=$'\x01' IFS='"'
    local -a parts
    # Control characters other than whitespace are invalid everywhere (and \x01 is ours).
    [[ $t == *[$'\x01'-$'\x08\x0b\x0c\x0e'-$'\x1f']* ]] && return 1
    t=${t//"$bs$bs"/@}
    t=${t//"$bs$q"/@}
    [[ $t == *"$q" ]] && return 1   # (word splitting drops a trailing empty field)
    set -f
    # shellcheck disable=SC2206 # split on '"' on purpose (IFS='"', no globbing)
    parts=($t)
    set +f
    (( ${#parts[@]} % 2 == 1 )) || return 1
    printf -v strs "%.0s%s$q" "${parts[@]}"
    [[ $strs == *[$'\t\n\r']* ]] && return 1
    if [[ $strs == *"$bs"* ]]; then
        # every remaining backslash starts \/ \b \f \n \r \t or \uXXXX; surrogates: precise path
        [[ $strs =~ \\([^/bfnrtu]|u([^0-9a-fA-F]|.[^0-9a-fA-F]|..[^0-9a-fA-F]|...[^0-9a-fA-F]|[dD][89a-fA-F])) ]] && return 1
    fi
    printf -v sk "%s$S%.0s" "${parts[@]}"
    sk=${sk%"$S"}
    # numbers: at most 15 digits in a row and 2 exponent digits, so they fit a double
    [[ $sk =~ [0-9]{16} ]] && return 1
    local num='-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9][0-9]?)?'
    local re_lex="^([$ws]*([][{}:,]|$S|($num|true|false|null)[$ws]*([][{}:,]|\$)))*[$ws]*\$"
    [[ $sk =~ $re_lex ]] || return 1
    sk=${sk//[$ws]/}
    [[ $sk == '{'* ]] || return 1
    sk=${sk//true/n}; sk=${sk//false/n}; sk=${sk//null/n}
    sk=${sk//[-0-9.eE+]/d}
    while [[ $sk == *dd* ]]; do sk=${sk//dd/d}; done
    sk=${sk//d/n}
    sk=${sk//"$S:"/k}
    sk="{k${sk//"$S"/n}}"
    while [[ $sk != "$prev" ]]; do
        prev=$sk
        sk=${sk//kn/m}
        while [[ $sk == *m,m* ]]; do sk=${sk//m,m/m}; done
        sk=${sk//'{m}'/n}; sk=${sk//'{}'/n}
        sk=${sk//kn/m}
        while [[ $sk == *n,n* ]]; do sk=${sk//n,n/n}; done
        sk=${sk//'[n]'/n}; sk=${sk//'[]'/n}
        (( ++passes ))
    done
    # A pass reduces at most two levels ({m} then [n]), so <= 30 passes means depth <= 60.
    [[ $sk == n ]] && (( passes <= 30 ))
}

# _labmesh_json_oneline TEXT -> _lm_json: a valid JSON text on one line: leading and trailing
# whitespace trimmed, and every whitespace run that holds a tab, CR or LF removed (raw control
# characters cannot be inside strings, so such runs lie between tokens); other spaces stay.
_labmesh_json_oneline() {
    local s=$1 ws=$' \t\n\r'
    local re_run=$'[ ]*[\t\n\r][ \t\n\r]*' re_lead="^[$ws]+" re_trail="[$ws]+$"
    [[ $s =~ $re_lead ]] && s=${s:${#BASH_REMATCH[0]}}
    [[ $s =~ $re_trail ]] && s=${s:0:${#s}-${#BASH_REMATCH[0]}}
    while [[ $s =~ $re_run ]]; do
        s=${s/"${BASH_REMATCH[0]}"/}
    done
    _lm_json=$s
}

# _labmesh_json_object TEXT: status 0 when TEXT is one valid JSON object, else status 1 and
# _lm_why says what is wrong and where. A pure-bash JSON (RFC 8259) tokenizer + bracket stack.
_labmesh_json_object() {
    local s=$1 n=${#1} stack='' st=S c tok kind depth=0 r _lm_expect what
    local ctl=$'\x01-\x1f'
    local re_ws=$'^[ \t\n\r]+'
    local re_plain='^"[^"\\'"$ctl"']*"'
    local re_chunk='^[^"\\'"$ctl"']+'
    local re_esc='^\\(["\\/bfnrt]|u([0-9a-cA-CefEF][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}|[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}))'
    local re_num='^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE]([+-]?)([0-9]+))?'
    _lm_why=''
    while :; do
        c=${s:0:1}
        case $c in
            '') break ;;
            ' ' | $'\t' | $'\n' | $'\r')
                [[ $s =~ $re_ws ]]
                s=${s:${#BASH_REMATCH[0]}}
                continue ;;
            '{' | '[' | '}' | ']' | ':' | ',') kind=$c; tok=$c ;;
            '"')
                kind=string
                if [[ $s =~ $re_plain ]]; then
                    tok=${BASH_REMATCH[0]}
                else
                    r=${s:1}; tok='"'
                    while :; do
                        if [[ $r =~ $re_chunk ]]; then
                            tok+=${BASH_REMATCH[0]}
                            r=${r:${#BASH_REMATCH[0]}}
                        fi
                        c=${r:0:1}
                        case $c in
                            '"') tok+='"'; break ;;
                            '\')
                                if [[ $r =~ $re_esc ]]; then
                                    tok+=${BASH_REMATCH[0]}
                                    r=${r:${#BASH_REMATCH[0]}}
                                    continue
                                fi
                                s=$r
                                if [[ ${r:1:1} == u && ${r:2:4} =~ ^[0-9a-fA-F]{4}$ ]]; then
                                    _labmesh_json_error "lone UTF-16 surrogate '${r:0:6}' in a string" "a \\uD800-\\uDBFF escape must be followed by a \\uDC00-\\uDFFF one"
                                elif [[ ${r:1:1} == u ]]; then
                                    _labmesh_json_error "invalid escape '${r:0:6}' in a string" "\\u needs 4 hex digits"
                                elif [[ -z ${r:1:1} ]]; then
                                    _labmesh_json_error "unterminated string ending with a backslash"
                                else
                                    _labmesh_json_error "invalid escape '${r:0:2}' in a string" "allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX"
                                fi
                                return 1 ;;
                            '')
                                _labmesh_json_error "unterminated string (no closing '\"') starting"
                                return 1 ;;
                            *)
                                s=$r
                                printf -v what 'U+%04X' "'$c"
                                _labmesh_json_error "control character $what inside a string" "write it as an escape: \\n, \\t or \\u00XX"
                                return 1 ;;
                        esac
                    done
                fi ;;
            - | [0-9])
                kind=number
                if ! [[ $s =~ $re_num ]]; then
                    _labmesh_json_error "invalid number"
                    return 1
                fi
                tok=${BASH_REMATCH[0]}
                if ! _labmesh_json_number_range "$tok"; then
                    _labmesh_json_error "number '$tok' is out of range for a 64-bit float"
                    return 1
                fi ;;
            t | f | n)
                kind=literal
                if [[ $s == true* ]]; then tok=true
                elif [[ $s == false* ]]; then tok=false
                elif [[ $s == null* ]]; then tok=null
                else
                    _labmesh_json_error "unexpected '${s:0:1}'" "not true, false or null"
                    return 1
                fi ;;
            *)
                if [[ $c == [$'\x01'-$'\x1f\x7f'] ]]; then
                    printf -v what 'control character U+%04X' "'$c"
                elif [[ $c == [$'\x80'-$'\xff'] ]]; then
                    what='non-ASCII text outside a string'
                else
                    what="'$c'"
                fi
                if [[ $st == E ]]; then
                    _labmesh_json_error "trailing data after the closing '}': found $what"
                else
                    _labmesh_json_expect
                    _labmesh_json_error "expected $_lm_expect, found $what"
                fi
                return 1 ;;
        esac

        # Grammar: st is what comes next: S start, k key or '}', K key, ':' colon, V value,
        # v value or ']', C ',' or the closing bracket, E end.
        case $kind in
            '{' | '[')
                case $st in
                    S)
                        if [[ $kind == '[' ]]; then
                            _lm_why='it must be a JSON object ({...}), not an array'
                            return 1
                        fi ;;
                    V | v) ;;
                    *) _labmesh_json_bad; return 1 ;;
                esac
                if (( ++depth > 64 )); then
                    _labmesh_json_error "it nests deeper than 64 levels"
                    return 1
                fi
                stack+=$kind
                if [[ $kind == '{' ]]; then st=k; else st=v; fi ;;
            '}' | ']')
                if [[ $kind == '}' ]]; then r='{'; else r='['; fi
                if [[ $st == [kv] && ${stack: -1} == "$r" ]] || [[ $st == C && ${stack: -1} == "$r" ]]; then
                    stack=${stack%?}
                    (( depth-- ))
                    if [[ -z $stack ]]; then st=E; else st=C; fi
                elif [[ ( $st == K && $kind == '}' ) || ( $st == V && $kind == ']' && ${stack: -1} == '[' ) ]]; then
                    _labmesh_json_error "trailing comma before '$kind'"
                    return 1
                else
                    _labmesh_json_bad; return 1
                fi ;;
            :)
                [[ $st == : ]] || { _labmesh_json_bad; return 1; }
                st=V ;;
            ,)
                [[ $st == C ]] || { _labmesh_json_bad; return 1; }
                if [[ ${stack: -1} == '{' ]]; then st=K; else st=V; fi ;;
            string)
                case $st in
                    k | K) st=: ;;
                    V | v) st=C ;;
                    S) _lm_why='it must be a JSON object ({...}), not a string'; return 1 ;;
                    *) _labmesh_json_bad; return 1 ;;
                esac ;;
            *)
                case $st in
                    V | v) st=C ;;
                    S) _lm_why="it must be a JSON object ({...}), not a $kind"; return 1 ;;
                    *) _labmesh_json_bad; return 1 ;;
                esac ;;
        esac
        s=${s:${#tok}}
    done
    if [[ $st != E ]]; then
        _labmesh_json_expect
        if [[ $st == S ]]; then
            _lm_why='it is empty'
        else
            _labmesh_json_error "unexpected end of text" "expected $_lm_expect; ${#stack} bracket(s) left open"
        fi
        return 1
    fi
    return 0
}

# _labmesh_json_bad: message for token $tok/$kind not allowed in state $st.
_labmesh_json_bad() {
    local _lm_expect found
    _labmesh_json_expect
    case $kind in
        string) found='a string' ;;
        number) found="the number $tok" ;;
        literal) found=$tok ;;
        *) found="'$tok'" ;;
    esac
    if [[ $st == E ]]; then
        _labmesh_json_error "trailing data after the closing '}': found $found"
    else
        _labmesh_json_error "expected $_lm_expect, found $found"
    fi
}

# _labmesh_json_number_range NUMBER: status 1 when a JSON number overflows an IEEE double
# (serde_json, used by the labmesh agent, rejects those).
_labmesh_json_number_range() {
    local t=${1#-} int frac='' e=0 es='' digits lead
    [[ $t == *[eE]* ]] && { es=${t#*[eE]}; t=${t%%[eE]*}; }
    int=${t%%.*}
    [[ $t == *.* ]] && frac=${t#*.}
    digits=$int$frac
    lead=${digits%%[1-9]*}
    digits=${digits:${#lead}}              # significant digits
    [[ -z $digits ]] && return 0           # zero
    if [[ -n $es ]]; then
        local sign=+
        [[ $es == [+-]* ]] && { sign=${es:0:1}; es=${es:1}; }
        while [[ $es == 0?* ]]; do es=${es#0}; done
        if (( ${#es} > 9 )); then
            [[ $sign == - ]] && return 0   # underflows to 0
            return 1
        fi
        e=$(( 10#$es ))
        [[ $sign == - ]] && e=$(( -e ))
    fi
    # decimal exponent of the first significant digit
    local intsig=${int#"${int%%[1-9]*}"}
    local mag
    if [[ -n $intsig ]]; then mag=$(( ${#intsig} - 1 + e )); else
        local fl=${frac%%[1-9]*}
        mag=$(( e - ${#fl} - 1 ))
    fi
    (( mag < 308 )) && return 0
    (( mag > 308 )) && return 1
    digits=${digits}00000000000000000
    (( 10#${digits:0:17} > 17976931348623158 )) && return 1
    return 0
}

# _labmesh_mkdirs DIR: mkdir -p, then fsync the parents of every folder it created.
_labmesh_mkdirs() {
    local dir=$1 p=$1 _lm_shown
    local -a made=() syncs=()
    [[ -d $dir ]] && return 0
    while [[ -n $p && ! -d $p ]]; do
        made=("$p" "${made[@]}")
        p=${p%/*}
    done
    [[ -z $p ]] && p=/
    if ! command mkdir -p -- "$dir"; then
        _labmesh_err "cannot create the event folder $dir (see the error above). Fix: make $p writable for $(id -un 2>/dev/null || echo "uid $EUID"), or set LABMESH_DATA_DIR to a writable folder."
        return 1
    fi
    # The new folders' entries live in their parents: the existing ancestor and each new folder
    # but the last (which is fsynced after the rename).
    syncs=("$p" "${made[@]:0:${#made[@]}-1}")
    if ! command sync -- "${syncs[@]}"; then
        _labmesh_err "cannot fsync the new folders under $p (see the error above)."
        return 1
    fi
    return 0
}

# ---------------------------------------------------------------------------------------------

_labmesh_emit() {
    if (( $# < 4 || $# > 6 )); then
        _labmesh_err "expected 4 to 6 arguments, got $#. Fix: call emit_event TYPE SEVERITY SOURCE SERVICE [CORRELATION_ID] [PAYLOAD_JSON], e.g. emit_event deployment_started info deploy.sh mosquitto run-42 '{\"version\": \"1.0\"}'"
        return 2
    fi
    local _lm_type=$1 _lm_sev=$2 _lm_src=$3 _lm_svc=$4 _lm_cid=${5-} _lm_payload=${6-}
    local _lm_shown _lm_json _lm_why _lm_node _lm_data _lm_sec _lm_ms _lm_date _lm_ts _lm_fts
    local -a _lm_r=()
    local re_type='^[a-z][a-z0-9]*(_[a-z0-9]+)*$'

    # type
    if [[ -z $_lm_type ]]; then
        _labmesh_err "invalid type '': it is empty. Fix: pass a snake_case event type, e.g. 'deployment_started'."
        return 2
    fi
    _labmesh_show "$_lm_type"
    if ! [[ $_lm_type =~ $re_type ]]; then
        _labmesh_err "invalid type $_lm_shown: it must be snake_case (lowercase letters a-z and digits, words joined by single underscores, starting with a letter). Fix: use a name like 'deployment_started'."
        return 2
    fi
    if (( ${#_lm_type} > 64 )); then
        _labmesh_err "invalid type $_lm_shown: it is ${#_lm_type} characters long, the limit is 64. Fix: use a shorter name."
        return 2
    fi

    # severity
    case $_lm_sev in
        info | warning | error | critical) ;;
        *)
            _labmesh_show "$_lm_sev"
            _labmesh_err "invalid severity $_lm_shown: it must be one of info, warning, error, critical. Fix: pass one of those (lowercase)."
            return 2 ;;
    esac

    _labmesh_text source "$_lm_src" 1 "'deploy.sh'" || return
    _labmesh_text service "$_lm_svc" 1 "'mosquitto', or 'all'" || return
    _labmesh_text correlation_id "$_lm_cid" 0 "" || return

    # payload
    local re_blank=$'^[ \t\n\r]*$'
    if [[ $_lm_payload =~ $re_blank ]]; then
        _lm_json='{}'
    else
        if ! _labmesh_utf8 "$_lm_payload"; then
            _labmesh_err "invalid payload: it is not valid UTF-8 text. Fix: convert it to UTF-8 (e.g. with iconv -t UTF-8)."
            return 2
        fi
        if ! _labmesh_json_fast "$_lm_payload" && ! _labmesh_json_object "$_lm_payload"; then
            _labmesh_err "invalid payload: $_lm_why. Fix: pass one JSON object as text, e.g. '{\"version\": \"1.0\"}'."
            return 2
        fi
        _labmesh_json_oneline "$_lm_payload"
    fi

    # environment
    _labmesh_node || return
    _labmesh_data_dir || return
    local _lm_max=${LABMESH_MAX_EVENT_BYTES-}
    if [[ -z $_lm_max ]]; then
        _lm_max=65536
    elif ! [[ $_lm_max =~ ^[0-9]{1,15}$ ]] || (( 10#$_lm_max == 0 )); then
        _labmesh_show "$_lm_max"
        _labmesh_err "invalid LABMESH_MAX_EVENT_BYTES $_lm_shown: it must be a positive whole number of bytes. Fix: unset it (default 65536) or set e.g. LABMESH_MAX_EVENT_BYTES=65536."
        return 2
    else
        _lm_max=$(( 10#$_lm_max ))
    fi

    # id and time
    _labmesh_now || return 1
    _labmesh_random || return 1
    _labmesh_civil "$_lm_sec" "$_lm_ms"
    local _lm_unix_ms=$(( _lm_sec * 1000 + _lm_ms )) _lm_id
    printf -v _lm_id '%08x-%04x-7%03x-%04x-%08x%04x' \
        $(( (_lm_unix_ms >> 16) & 0xffffffff )) $(( _lm_unix_ms & 0xffff )) \
        $(( _lm_r[0] & 0xfff )) $(( 0x8000 | ((_lm_r[0] >> 12) & 0x3fff) )) \
        $(( _lm_r[1] & 0xffffffff )) $(( _lm_r[2] & 0xffff ))

    # the line: only '"' and '\' need escaping (control characters were refused above)
    local bs='\' q='"' src svc cid
    src=${_lm_src//"$bs"/"$bs$bs"}; src=${src//"$q"/"$bs$q"}
    svc=${_lm_svc//"$bs"/"$bs$bs"}; svc=${svc//"$q"/"$bs$q"}
    cid=${_lm_cid//"$bs"/"$bs$bs"}; cid=${cid//"$q"/"$bs$q"}
    local line="{\"id\":\"$_lm_id\",\"timestamp\":\"$_lm_ts\",\"node\":\"$_lm_node\",\"type\":\"$_lm_type\",\"severity\":\"$_lm_sev\",\"source\":\"$src\",\"service\":\"$svc\",\"correlation_id\":\"$cid\",\"payload\":$_lm_json}"
    local size=$(( ${#line} + 1 ))
    if (( size > _lm_max )); then
        _labmesh_err "invalid payload: the event file would be $size bytes, over the limit of $_lm_max bytes (LABMESH_MAX_EVENT_BYTES${LABMESH_MAX_EVENT_BYTES:+=$LABMESH_MAX_EVENT_BYTES}, default 65536). Fix: send a smaller payload (it is ${#_lm_json} bytes) or raise LABMESH_MAX_EVENT_BYTES."
        return 2
    fi

    # durable atomic write
    local dir=$_lm_data/events/$_lm_date/$_lm_node
    local name=${_lm_fts}_${_lm_type}_${_lm_id}.json
    local final=$dir/$name tmp
    printf -v tmp '%s/.%s.%08x.tmp' "$dir" "$name" $(( _lm_r[3] & 0xffffffff ))
    _labmesh_mkdirs "$dir" || return 1
    if [[ ! -w $dir ]]; then
        _labmesh_err "cannot write to the event folder $dir: permission denied. Fix: make it writable for $(id -un 2>/dev/null || echo "uid $EUID"), or set LABMESH_DATA_DIR to a writable folder."
        return 1
    fi
    set -C   # noclobber: create the temp file exclusively (O_EXCL); restored by _labmesh_leave
    if ! { printf '%s\n' "$line" >"$tmp"; }; then
        set +C
        [[ -e $tmp ]] && command rm -f -- "$tmp"
        _labmesh_err "cannot write the temp file $tmp (see the error above: disk full or read-only?)."
        return 1
    fi
    set +C
    if ! command sync -- "$tmp"; then
        command rm -f -- "$tmp"
        _labmesh_err "cannot fsync the temp file $tmp (see the error above); nothing was stored."
        return 1
    fi
    if ! command mv -f -- "$tmp" "$final"; then
        command rm -f -- "$tmp"
        _labmesh_err "cannot rename $tmp to $final (see the error above); nothing was stored."
        return 1
    fi
    if ! command sync -- "$dir"; then
        _labmesh_err "stored $final but could not fsync its folder $dir (see the error above): the event may be lost on a crash."
        return 1
    fi
    printf '%s\n' "$final"
    return 0
}

_labmesh_list() {
    local _lm_date _lm_ts _lm_fts _lm_sec _lm_ms _lm_data _lm_shown node=${2-}
    if (( $# > 2 )); then
        _labmesh_err "expected at most 2 arguments, got $#. Fix: call list_events [YYYY-MM-DD [NODE]]."
        return 2
    fi
    if [[ -z ${1-} ]]; then
        _labmesh_now || return 1
        _labmesh_civil "$_lm_sec" 0
    else
        _lm_date=$1
        _labmesh_show "$_lm_date"
        if ! [[ $_lm_date =~ ^([0-9]{4})-([0-9]{2})-([0-9]{2})$ ]]; then
            _labmesh_err "invalid date $_lm_shown: it must be YYYY-MM-DD (a UTC date). Fix: pass e.g. '2026-05-12', or nothing for today."
            return 2
        fi
        local y=$(( 10#${BASH_REMATCH[1]} )) m=$(( 10#${BASH_REMATCH[2]} )) d=$(( 10#${BASH_REMATCH[3]} )) dim=31
        case $m in
            4 | 6 | 9 | 11) dim=30 ;;
            2) dim=28; (( (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 )) && dim=29 ;;
        esac
        if (( m < 1 || m > 12 || d < 1 || d > dim )); then
            _labmesh_err "invalid date $_lm_shown: there is no such day. Fix: pass an existing date as YYYY-MM-DD."
            return 2
        fi
    fi
    if [[ -n $node ]] && ! _labmesh_hostname "$node"; then
        _labmesh_show "$node"
        _labmesh_err "invalid node $_lm_shown: it must be a valid host name (labels of letters, digits and '-'). Fix: pass a node folder name, or nothing for all nodes."
        return 2
    fi
    _labmesh_data_dir || return
    local base=$_lm_data/events/$_lm_date
    [[ -d $base ]] || return 0

    # Each node folder's glob is sorted by name (LC_ALL=C: byte order); merge them by file name.
    shopt -s nullglob
    local d f nm rc=0 content
    local -a e=() start=() end=() head=()
    for d in "$base"/*/; do
        nm=${d%/}; nm=${nm##*/}
        [[ $nm == .* ]] && continue
        [[ -n $node && $nm != "$node" ]] && continue
        start+=("${#e[@]}")
        for f in "$d"*.json; do
            [[ ${f##*/} == .* || ! -f $f ]] && continue
            e+=("${f##*/}"$'\x01'"$f")
        done
        end+=("${#e[@]}")
    done
    shopt -u nullglob
    head=("${start[@]}")
    local k=${#start[@]} left=${#e[@]} j best
    while (( left-- > 0 )); do
        best=-1
        for (( j = 0; j < k; j++ )); do
            (( head[j] < end[j] )) || continue
            if (( best < 0 )) || [[ ${e[head[j]]} < ${e[head[best]]} ]]; then best=$j; fi
        done
        f=${e[head[best]]#*$'\x01'}
        (( head[best]++ ))
        if [[ ! -r $f ]]; then
            _labmesh_err "cannot read $f (permission denied); skipped."
            rc=1
            continue
        fi
        content=''
        IFS= read -r -d '' content <"$f"
        while [[ $content == *$'\n' ]]; do content=${content%$'\n'}; done
        [[ -n $content ]] && printf '%s\n' "$content"
    done
    return "$rc"
}

if [[ -n ${_labmesh_expand_aliases_was_on-} ]]; then
    shopt -s expand_aliases
fi
unset _labmesh_expand_aliases_was_on
