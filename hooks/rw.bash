# shellcheck shell=bash
# rw: capture hooks for bash >= 4.4, printed by `rw init bash`.
# Add to ~/.bashrc:   eval "$(rw init bash)"
#
# Every command is appended as a record to this session's spool file, which
# the rw daemon follows. Writing to a regular file never blocks and never
# raises SIGPIPE, whatever state the daemon is in, and nothing here forks on
# a command's path: only builtins run.

if [[ $- == *i* ]] && ((BASH_VERSINFO[0] > 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] >= 4))); then
	if [[ -z ${__rw_sid-} ]]; then
		__rw_bin=@RW_BIN@
		__rw_spool_dir=@RW_SPOOL_DIR@
		__rw_scratch_dir=@RW_SCRATCH_DIR@
		__rw_pid_file=@RW_PID_FILE@
		__rw_stop_file=@RW_STOP_FILE@
		__rw_autostart=@RW_AUTOSTART@
		__rw_tty=@RW_TTY@
		__rw_user=@RW_USER@
		__rw_timeout=@RW_TIMEOUT@
		__rw_watching=@RW_WATCHING@
		__rw_record=@RW_RECORD@

		# Under `rw record`, RW_RECORD is TOKEN:PID:TTY: this shell marks each
		# step for the recorder (OSC 133, written to the terminal itself, so a
		# redirection of the command's output cannot take a mark with it). Only
		# when it names this terminal and a recorder still running: a tmux pane
		# or an ssh login started from a recorded shell inherits it, unrecorded.
		__rw_mark=${RW_RECORD-}
		__rw_mtty=${__rw_mark#*:} __rw_mark=${__rw_mark%%:*}
		__rw_mpid=${__rw_mtty%%:*} __rw_mtty=${__rw_mtty#*:}
		[[ -n $__rw_mark && $__rw_mark != *[!0-9a-f]* && -n $__rw_mpid && $__rw_mpid != *[!0-9]* &&
			-n $__rw_tty && $__rw_mtty == "$__rw_tty" && -d /proc/$__rw_mpid ]] || __rw_mark='' __rw_mtty=''
		# `[record] output = true` or `rw init bash --record`: a new terminal shell
		# not recorded yet becomes `rw record` (exec: the terminal keeps one shell;
		# it runs the rc files again, under the recorder). RW_RECORD=off: not this one.
		if [[ $__rw_record == 1 && -z $__rw_mark && ${RW_RECORD-} != off && -z ${RW_BRANCH_INTO-} &&
			-n $__rw_tty && -t 0 && -t 1 && -x $__rw_bin ]]; then
			# A failed exec in an rc file ends bash: the interpreter rw's script
			# names is looked for first.
			__rw_t=''
			{ \builtin read -r __rw_t <"$__rw_bin"; } 2>/dev/null
			if [[ $__rw_t == '#!'* ]]; then
				__rw_t=${__rw_t#??}
				__rw_t=${__rw_t%% *}
			else
				__rw_t=$__rw_bin
			fi
			[[ ! -x $__rw_t ]] || \builtin exec "$__rw_bin" record --or-shell bash
			\builtin printf 'rw: output is not recorded in this shell: cannot start rw record\n' >&2
		fi

		__rw_now() {
			if [[ -n ${EPOCHREALTIME-} ]]; then
				__rw_t=$EPOCHREALTIME
			else
				\builtin printf -v __rw_t '%(%s)T' -1
			fi
		}

		__rw_now
		\builtin printf -v __rw_sid '%s%05x%04x' "${__rw_t//[.,]/}" "$$" "$RANDOM"
		# `rw branch SESSION STEP --exec` opens this shell to record into a branch
		# it has already made.
		if [[ -n ${RW_BRANCH_INTO-} ]]; then
			__rw_sid=$RW_BRANCH_INTO
			\builtin unset RW_BRANCH_INTO
		fi
		__rw_parent=${RW_SESSION-}
		\builtin export RW_SESSION=$__rw_sid
		__rw_spool=$__rw_spool_dir/$__rw_sid.spool
		__rw_histfile=$__rw_scratch_dir/$__rw_sid.hist
		__rw_ack=$__rw_scratch_dir/$__rw_sid.ack
		__rw_ackfd='' __rw_ackof='' __rw_ackskip=0 __rw_cold='' __rw_late='' __rw_told=''
		__rw_seq=0
		__rw_pending='' __rw_psid='' __rw_pspool='' __rw_unrec=''
		__rw_wfail='' __rw_nlost='' __rw_lost_since='' __rw_why='' __rw_ev=''
		__rw_lasthist=
		__rw_dpid=
		__rw_next_start=0
		__rw_next_check=0
		# PS0 is expanded once for each command the shell reads, before it runs.
		# This expansion prints nothing (a lookup in an empty associative array)
		# but appends to __rw_go that a line is about to run: the time it starts,
		# then $? and PIPESTATUS as the line before it left them. A prompt comes
		# after each line typed; the lines of a pasted block run one after
		# another with none between them, and this is what tells their ends.
		# (Kept this small on purpose: an arithmetic expansion or $PWD here
		# costs the prompt 20-30 us.)
		\builtin declare -gA __rw_nil
		__rw_go=()
		# shellcheck disable=SC2016
		__rw_ps0='${__rw_nil[${__rw_go[${#__rw_go[@]}]:=${EPOCHREALTIME:-1} $? ${PIPESTATUS[*]}}]-}'
		# Recorded: each line read starts the next step (C, its number kept in
		# __rw_cs), also one that runs no command of the shell itself (a bare
		# subshell, `cmd &`), which the DEBUG trap never sees; and the line of a
		# pasted block still running when the next one is read has ended (D).
		# A line that is not recorded uses up its number, which no command
		# will then have: its output goes with no step.
		# shellcheck disable=SC2016 # expanded when PS0 is
		[[ -z $__rw_mark ]] ||
			__rw_ps0+='${__rw_pending:+'$'\e'']133;D;$?;rw='$__rw_mark':$__rw_psid:$__rw_pending'$'\a''}'$'\e'']133;C;rw='$__rw_mark':$__rw_sid:$((__rw_cs = __rw_seq + 1))'$'\a'
		__rw_cs=''

		__rw_write() {
			# One record: NUL-terminated fields between start and end markers.
			# (Callers send stderr to /dev/null once, for all they do.)
			\builtin printf '%s\0' $'\036RW1' "$@" $'\036END' >>"$__rw_spool" || __rw_wfail=1
		}

		# Every few seconds, a liveness check (a zombie has no fds); start the
		# daemon in the background if it is gone.
		__rw_ensure_daemon() {
			__rw_next_check=$((SECONDS + 5))
			[[ -n $__rw_dpid && -e /proc/$__rw_dpid/fd/0 ]] && return 0
			[[ -r $__rw_pid_file ]] && { \builtin read -r __rw_dpid <"$__rw_pid_file" || :; }
			[[ -n $__rw_dpid && -e /proc/$__rw_dpid/fd/0 ]] && return 0
			# (Not while it is stopped on purpose: `rw daemon stop` until `rw daemon start`.)
			[[ $__rw_autostart == 1 && ! -e $__rw_stop_file ]] || return 0
			\builtin printf -v __rw_sec '%(%s)T' -1
			((__rw_sec >= __rw_next_start)) || return 0
			__rw_next_start=$((__rw_sec + 30))
			# (A daemon that never answered this shell is not waited for so long again.)
			[[ -n $__rw_told ]] || __rw_cold=1
			("$__rw_bin" daemon start --no-wait --auto </dev/null >/dev/null 2>&1 3>&- &)
			return 0
		}

		# When rw watches paths, the daemon keeps this session's FIFO: it checkpoints
		# the watched files before each command, and the command waits for that
		# (at most __rw_timeout seconds; while a daemon this shell started is still
		# coming up, longer). Confirming with an A record makes the checkpoint
		# valid; a command that stopped waiting never gets a late one.
		__rw_await() {
			[[ -p $__rw_ack ]] || return 0
			((SECONDS >= __rw_ackskip)) || return 0
			# 10 s covers the interpreter's start and a first read of the watched trees.
			local __rw_to=$__rw_timeout
			[[ -z $__rw_cold ]] || __rw_to=10
			if [[ $__rw_ackof != "$__rw_ack" ]]; then
				[[ -z $__rw_ackfd ]] || \builtin exec {__rw_ackfd}<&-
				\builtin exec {__rw_ackfd}<>"$__rw_ack" || {
					__rw_ackfd='' __rw_ackof=''
					return 0
				}
				__rw_ackof=$__rw_ack
			fi
			local __rw_line
			while \builtin read -r -t "$__rw_to" -u "$__rw_ackfd" __rw_line; do
				if [[ $__rw_line == "$__rw_sid $1 "* ]]; then
					[[ $__rw_line != *" ok" ]] || __rw_write A "$__rw_sid" "$1"
					__rw_cold=''
					return 0
				fi
			done
			# No answer in time: this command has no checkpoint, and for a while
			# the next ones do not wait either. The user is told, once.
			__rw_ackskip=$((SECONDS + 30)) __rw_cold=''
			[[ -n $__rw_told ]] || __rw_late=$__rw_to
			return 0
		}

		# Outside __rw_await, whose stderr is /dev/null. ($__rw_late: how long it waited.)
		__rw_tell_late() {
			__rw_told=1
			\builtin printf 'rw: the daemon did not answer within %ss, so this command has no checkpoint of the watched files (see: rw doctor)\n' "$__rw_late" >&2
			__rw_late=''
		}

		# Made by the shell when paths are watched, so its first commands wait even
		# while the daemon is still starting (one fork, when a session begins).
		__rw_make_ack() {
			[[ -p $__rw_ack ]] || \command mkfifo -m 600 -- "$__rw_ack" 2>/dev/null || :
		}

		__rw_is_alias_of() {
			local w=${1%%[[:space:]]*}
			[[ -n $w && -n $2 && $w != *[][*?@\\]* ]] || return 1
			[[ -n ${BASH_ALIASES[$w]+x} && "${BASH_ALIASES[$w]}${1#"$w"}" == *"$2"* ]]
		}

		# Runs once for each new command line, before its first simple command
		# (the DEBUG trap calls it; $1 is the command about to run, $2 passes
		# $_ through). This is the hot path: few statements, no subshell.
		# PROMPT_COMMAND calls it with $1 empty for a line the trap did not see
		# begin (one that ran no simple command in this shell, such as a bare
		# `( ... )` subshell): that line has run already.
		__rw_begin() {
			# The user's options (allexport, errexit, noglob, nounset, xtrace,
			# pipefail) must not apply to us; `local -` restores them when the
			# function returns. (Only when one is set: most shells have none.)
			[[ $- != *[aefux]* && ! -o pipefail ]] || {
				\builtin local -
				\builtin set +aefux +o pipefail
			}
			# Lines before this one that ran with no prompt between (a pasted block).
			[[ -z $__rw_pending$__rw_unrec && -z ${__rw_go[1]+x} ]] || __rw_lines "$1" 2>/dev/null
			__rw_t=${__rw_go-}
			__rw_go=()
			[[ $1 != exit && $1 != 'exit '* ]] || __rw_ev=$__rw_t
			__rw_t=${__rw_t%% *}
			[[ $__rw_t == *[.,]* ]] || {
				__rw_t=${EPOCHREALTIME-}
				[[ -n $__rw_t ]] || \builtin printf -v __rw_t '%(%s)T' -1
			}
			# The spool is gone (RW_HOME deleted, then made again by a new daemon):
			# the session starts again in it, or the daemon would not know its steps.
			[[ -e $__rw_spool ]] || __rw_reopen 2>/dev/null
			if [[ -n $1 && -o history && ${HISTCMD-} != "$__rw_lasthist" ]]; then
				# The line made a new history entry (HISTCMD moved), so `history 1`
				# goes straight into the record. The daemon strips its number and
				# drops a line that begins with a space.
				__rw_seq=$((__rw_seq + 1)) __rw_lasthist=$HISTCMD
				__rw_pending=$__rw_seq __rw_psid=$__rw_sid __rw_pspool=$__rw_spool
				[[ -z ${HISTTIMEFORMAT-} ]] || local HISTTIMEFORMAT=''
				{
					\builtin printf '%s\0' $'\036RW1' H "$__rw_sid" "$__rw_seq" "$__rw_t" \
						"$PWD" && \builtin history 1 && \builtin printf '\0\036END\0'
				} 2>/dev/null >>"$__rw_spool" || __rw_wfail=1
			else
				__rw_begin_other "$1" 2>/dev/null || {
					__rw_unrec=1
					[[ $__rw_cs != "$((__rw_seq + 1))" ]] || __rw_seq=$__rw_cs
					return 0
				}
			fi
			[[ -z $__rw_mark || -z $1 ]] ||
				\builtin printf '\e]133;C;rw=%s:%s:%s\a' "$__rw_mark" "$__rw_sid" "$__rw_seq" 2>/dev/null >>"$__rw_mtty"
			# A step checkpoint is only for a line that has not run yet: taken
			# now, it would hold what the line did.
			[[ -z $1 || ! -p $__rw_ack ]] || {
				__rw_await "$__rw_seq" 2>/dev/null
				[[ -z $__rw_late ]] || if [[ -n $__rw_quiet ]]; then __rw_tell_late 2>&3; else __rw_tell_late; fi
			}
			[[ -z $__rw_ev ]] || __rw_exiting "$1" 2>/dev/null
			return 0
		}

		# `exit` or `exit N` is about to end the shell, and no hook runs after
		# it: its end is written now, with the status the shell exits with. (Not
		# when jobs may keep the shell open, or the status is not a number yet:
		# then the daemon ends the step when the shell is gone, status unknown.)
		__rw_exiting() {
			local __rw_c=${__rw_ev#* } __rw_a=${1#exit}
			__rw_ev=''
			__rw_a=${__rw_a#"${__rw_a%%[! ]*}"}
			[[ ($1 == exit || $1 == 'exit '*) && -n $__rw_pending && $__rw_a != *[!0-9]* &&
				${#__rw_a} -le 9 ]] || return 0
			\builtin jobs -p >|"$__rw_histfile" && [[ ! -s $__rw_histfile ]] || return 0
			if [[ -z $__rw_a ]]; then
				__rw_c=${__rw_c%% *} # the status of the line before it
			else
				__rw_c=$((10#$__rw_a & 255))
			fi
			__rw_now
			{
				\builtin printf '%s\0' $'\036RW1' E "$__rw_psid" "$__rw_pending" "$__rw_t" "$__rw_c" \
					"$__rw_c" "$PWD" declare && \builtin export -p && \builtin printf '\0\036END\0'
			} >>"$__rw_pspool" || __rw_wfail=1
			[[ -z $__rw_mark ]] || \builtin printf '\e]133;D;%s;rw=%s:%s:%s\a' "$__rw_c" "$__rw_mark" \
				"$__rw_psid" "$__rw_pending" >>"$__rw_mtty"
			__rw_pending=
		}

		# The lines of a pasted block run one after another, with no prompt
		# between them: here, at the next line ($1; "" at the prompt), the step
		# still open ends with the status PS0 saw, and each line before this one
		# that ran no simple command (a subshell, a function definition: no DEBUG
		# trap) becomes a step, its text from history. (The cwd and environment
		# after them are those of now: nothing ran since that could change them.)
		__rw_lines() {
			if [[ -n $__rw_pending ]]; then
				__rw_end "$__rw_psid" "$__rw_pspool" "$__rw_pending" "${__rw_go[0]}"
				__rw_pending=
			fi
			if [[ -n $__rw_unrec ]]; then
				# (Written before the next line's records: see __rw_precmd.)
				__rw_unrec=
				__rw_now
				{
					\builtin printf '%s\0' $'\036RW1' U "$__rw_sid" "$__rw_t" declare &&
						\builtin export -p && \builtin printf '\0\036END\0'
				} >>"$__rw_spool" || __rw_wfail=1
			fi
			[[ -n ${__rw_go[1]+x} && -o history && -n ${HISTCMD-} && $__rw_lasthist == [0-9]* ]] ||
				return 0
			local __rw_n=${#__rw_go[@]} __rw_i __rw_k __rw_top __rw_h __rw_s
			local -a __rw_hs=() __rw_at=()
			# The history entries since the last one recorded, comments left out:
			# one for each of these lines and, the newest, for the line itself.
			# Any other count (a line kept out of history) and they are not recorded.
			__rw_top=$HISTCMD
			[[ -n $1 ]] || __rw_top=$((HISTCMD - 1))
			for ((__rw_k = __rw_lasthist + 1; __rw_k <= __rw_top && __rw_k - __rw_lasthist <= 64; __rw_k++)); do
				\builtin fc -ln "$__rw_k" "$__rw_k" >|"$__rw_histfile" || return 0
				__rw_h=''
				\builtin read -r -d '' __rw_h <"$__rw_histfile"
				__rw_h=${__rw_h#$'\t '}
				__rw_h=${__rw_h%$'\n'}
				__rw_s=${__rw_h#"${__rw_h%%[![:space:]]*}"}
				[[ -z $__rw_s || $__rw_s == '#'* ]] && continue
				__rw_hs+=("$__rw_h")
				__rw_at+=("$__rw_k")
			done
			((${#__rw_hs[@]} == __rw_n)) || return 0
			for ((__rw_i = 0; __rw_i < __rw_n - 1; __rw_i++)); do
				[[ ${__rw_hs[__rw_i]} != [[:space:]]* ]] || continue
				((++__rw_seq))
				__rw_when "${__rw_go[__rw_i]}"
				__rw_write B "$__rw_sid" "$__rw_seq" "$__rw_w" "$PWD" "${__rw_hs[__rw_i]}"
				__rw_end "$__rw_sid" "$__rw_spool" "$__rw_seq" "${__rw_go[__rw_i + 1]}"
			done
			__rw_lasthist=${__rw_at[__rw_n - 2]}
			__rw_go=("${__rw_go[__rw_n - 1]}")
			return 0
		}

		# An E record (sid spool seq), from what PS0 saved as the next line began
		# ($4: its start time, then the status and PIPESTATUS this step left).
		__rw_end() {
			local __rw_e=${4#* } __rw_w=${4%% *}
			[[ $__rw_w == *[.,]* ]] || \builtin printf -v __rw_w '%(%s)T' -1
			{
				\builtin printf '%s\0' $'\036RW1' E "$1" "$3" "$__rw_w" "${__rw_e%% *}" \
					"${__rw_e#* }" "$PWD" declare && \builtin export -p && \builtin printf '\0\036END\0'
			} >>"$2" || __rw_wfail=1
		}

		# The time in what PS0 saved ($1), or now (bash 4.4 has no EPOCHREALTIME).
		__rw_when() {
			__rw_w=${1%% *}
			[[ $__rw_w == *[.,]* ]] || \builtin printf -v __rw_w '%(%s)T' -1
		}

		# A line that made no new history entry, or history is off: find its
		# text, and whether to record it. Status 1: not recorded.
		__rw_begin_other() {
			local __rw_h='' __rw_cmd='' __rw_new='' __rw_n='' __rw_type=B
			if [[ -o history ]]; then
				if [[ -n ${HISTTIMEFORMAT-} ]]; then
					HISTTIMEFORMAT='' \builtin history 1 >|"$__rw_histfile" || return 1
				else
					\builtin history 1 >|"$__rw_histfile" || return 1
				fi
				\builtin read -r -d '' __rw_h <"$__rw_histfile"
				__rw_h=${__rw_h%$'\n'}
			fi
			# `history 1` prints "%5d%c %s": number, a '*' or ' ', a space, the line.
			if [[ ${__rw_h:0:1} == " " ]]; then
				__rw_n=${__rw_h:0:5}
				__rw_n=${__rw_n// /}
				__rw_cmd=${__rw_h:7}
			elif [[ -n $__rw_h ]]; then
				__rw_n=${__rw_h%%[!0-9]*}
				__rw_cmd=${__rw_h:${#__rw_n}+2}
			fi
			if [[ -n $__rw_n ]]; then
				[[ $__rw_n != "$__rw_lasthist" ]] && __rw_new=1
				__rw_lasthist=$__rw_n
			else
				# History is off or empty: the command bash is about to run, which
				# may be only the first of the line (a P record says so).
				__rw_cmd=$1
				__rw_new=1 __rw_type=P
			fi
			if [[ -z $__rw_new ]]; then
				# No new history entry: HISTCONTROL or HISTIGNORE kept the line out.
				# A repeat of the last entry (ignoredups, erasedups) is recorded;
				# anything else (a leading space, HISTIGNORE) is not.
				[[ $HISTCONTROL == *ignoredups* || $HISTCONTROL == *ignoreboth* ||
					$HISTCONTROL == *erasedups* ]] || return 1
				[[ -n $1 && $__rw_cmd == *"$1"* ]] || __rw_is_alias_of "$__rw_cmd" "$1" || return 1
			fi
			[[ -z $__rw_cmd || $__rw_cmd == [[:space:]]* ]] && return 1
			((++__rw_seq))
			__rw_pending=$__rw_seq __rw_psid=$__rw_sid __rw_pspool=$__rw_spool
			__rw_write "$__rw_type" "$__rw_sid" "$__rw_seq" "$__rw_t" "$PWD" "$__rw_cmd"
			return 0
		}

		# For bash-preexec, which calls its preexec functions before every
		# command line (ours ignores its argument, as bash-preexec passes the
		# history line; "$_" passes $_ through).
		__rw_debug() {
			[[ -z ${__rw_go-} || $BASH_SUBSHELL != 0 || $BASH_COMMAND == __rw_precmd* ]] || __rw_begin "$BASH_COMMAND" "$_"
			return 0
		}

		# The DEBUG trap, when the user already had one: ours, then theirs, which
		# finds $? and $_ as they were ($1 and $2).
		__rw_chain() {
			[[ -z ${__rw_go-} || $BASH_SUBSHELL != 0 || $BASH_COMMAND == __rw_precmd* ]] || __rw_begin "$BASH_COMMAND" "$2"
			return "$1"
		}

		# PROMPT_COMMAND's entry, after every command line: the end record, with
		# the environment the command left behind.
		__rw_precmd() {
			local __rw_st=$? __rw_ps="${BP_PIPESTATUS[*]:-${PIPESTATUS[*]}}" __rw_x=$-
			[[ $- != *[aefux]* && ! -o pipefail ]] || {
				\builtin local -
				\builtin set +aefux +o pipefail
			}
			# A line the DEBUG trap missed (the trap was replaced, or the line
			# ran no simple command) is recorded now.
			[[ -z ${__rw_go-} ]] || __rw_begin ""
			[[ -z $__rw_mark ]] || __rw_mark_prompt "$__rw_st" 2>/dev/null
			# (The step's begin went to a spool now gone: its end is not written.)
			[[ -e $__rw_spool ]] || {
				__rw_pending='' __rw_unrec=''
				__rw_reopen 2>/dev/null
			}
			if [[ -n $__rw_pending ]]; then
				__rw_t=${EPOCHREALTIME-}
				[[ -n $__rw_t ]] || \builtin printf -v __rw_t '%(%s)T' -1
				{
					\builtin printf '%s\0' $'\036RW1' E "$__rw_psid" "$__rw_pending" "$__rw_t" \
						"$__rw_st" "$__rw_ps" "$PWD" declare && \builtin export -p && \builtin printf '\0\036END\0'
				} 2>/dev/null >>"$__rw_pspool" || __rw_wfail=1
				__rw_pending=
			elif [[ -n $__rw_unrec ]]; then
				# A line not recorded may have exported a secret: the daemon keeps
				# what it set out of the environments stored after it.
				__rw_unrec=
				__rw_now
				{
					\builtin printf '%s\0' $'\036RW1' U "$__rw_sid" "$__rw_t" declare &&
						\builtin export -p && \builtin printf '\0\036END\0'
				} 2>/dev/null >>"$__rw_spool" || __rw_wfail=1
			fi
			[[ -n $__rw_opened ]] || __rw_open "" 2>/dev/null
			# At the prompt HISTCMD is one past the last history entry, whatever
			# ran before: keep the entry's number, for telling new lines from
			# lines history kept out.
			[[ -n ${HISTCMD-} && $HISTCMD != *[!0-9]* ]] && __rw_lasthist=$((HISTCMD - 1))
			[[ ${PS0-} == *"$__rw_ps0"* ]] || PS0=$__rw_ps0${PS0-}
			((SECONDS < __rw_next_check)) || __rw_ensure_daemon 2>/dev/null
			# ($1 is 3 when PROMPT_COMMAND runs it: fd 3 is then the user's stderr.)
			[[ -z $__rw_wfail$__rw_nlost ]] || if [[ ${1-} == 3 ]]; then __rw_lost 2>&3; else __rw_lost; fi
			[[ $__rw_x != *x* ]] || [[ -n $__rw_quiet ]] || __rw_xtrace 1
			[[ $__rw_x == *x* || -z $__rw_quiet ]] || __rw_xtrace ''
			return "$__rw_st"
		}

		# Under xtrace (set -x), which writes to stderr, our DEBUG trap runs with
		# stderr to /dev/null (3: the user's), so that it is not traced; not
		# otherwise, as that costs a redirection for every simple command. (Our
		# own trap only: a DEBUG trap of the user's we run may print.)
		__rw_xtrace() {
			[[ -n $__rw_trap ]] || return 0
			__rw_quiet=$1
			if [[ -n $1 ]]; then
				\builtin trap -- "{ $__rw_trap; } 3>&2 2>/dev/null" DEBUG
			else
				\builtin trap -- "$__rw_trap" DEBUG
			fi
		}

		# Recorded: the line that ran has ended with status $1 (its D mark),
		# and the prompt starts (A): what is printed until the next C, a
		# background job's lines included, belongs to no step.
		__rw_mark_prompt() {
			if [[ -n $__rw_pending ]]; then
				\builtin printf '\e]133;D;%s;rw=%s:%s:%s\a\e]133;A;rw=%s:%s:\a' "$1" "$__rw_mark" \
					"$__rw_psid" "$__rw_pending" "$__rw_mark" "$__rw_sid" >>"$__rw_mtty"
			else
				\builtin printf '\e]133;A;rw=%s:%s:\a' "$__rw_mark" "$__rw_sid" >>"$__rw_mtty"
			fi
		}

		# A record could not be written (no space left, the spool dir gone):
		# count the command lines lost, tell the user once, and once records go
		# through again, leave the daemon a note of the gap (an L record).
		__rw_lost() {
			if [[ -n $__rw_wfail ]]; then
				__rw_wfail=
				if [[ -z $__rw_nlost ]]; then
					__rw_nlost=0 __rw_lost_since=$__rw_t
					if [[ ! -d $__rw_spool_dir ]]; then
						__rw_why="the spool directory $__rw_spool_dir is missing"
					elif [[ ! -w $__rw_spool_dir || (-e $__rw_spool && ! -w $__rw_spool) ]]; then
						__rw_why="$__rw_spool_dir is not writable"
					else
						__rw_why="no space left on device in $__rw_spool_dir"
					fi
					\builtin printf 'rw: a command could not be recorded: %s; until then none will be (see rw doctor)\n' \
						"$__rw_why" >&2
				fi
				((++__rw_nlost))
				return 0
			fi
			__rw_now
			__rw_write L "$__rw_sid" "$__rw_nlost" "$__rw_lost_since" "$__rw_t" "$__rw_why" 2>/dev/null
			if [[ -n $__rw_wfail ]]; then
				__rw_wfail=
			else
				__rw_nlost=
			fi
			return 0
		}

		__rw_install() {
			\builtin local -
			\builtin set +aefux +o pipefail
			[[ $PS0 == *"$__rw_ps0"* ]] || PS0=$__rw_ps0${PS0-}
			if [[ -n ${bash_preexec_imported-}${__bp_imported-} ]]; then
				# bash-preexec owns the DEBUG trap and PROMPT_COMMAND: join it.
				[[ " ${preexec_functions[*]-} " == *" __rw_debug "* ]] ||
					preexec_functions+=(__rw_debug)
				[[ " ${precmd_functions[*]-} " == *" __rw_precmd "* ]] ||
					precmd_functions=(__rw_precmd "${precmd_functions[@]}")
				return 0
			fi
			local __rw_pc='' __rw_prev
			for __rw_pc in "${PROMPT_COMMAND[@]}"; do
				[[ $__rw_pc == *__rw_precmd* ]] && break
			done
			if [[ $__rw_pc != *__rw_precmd* ]]; then
				# (Its stderr to /dev/null, 3 the user's: see __rw_xtrace.)
				if ((${#PROMPT_COMMAND[@]} > 1)); then
					PROMPT_COMMAND=("$__rw_pcmd" "${PROMPT_COMMAND[@]}")
				else
					# shellcheck disable=SC2128,SC2178 # a scalar (or one-element array)
					PROMPT_COMMAND="$__rw_pcmd${PROMPT_COMMAND:+$'\n'$PROMPT_COMMAND}"
				fi
			fi
			# A DEBUG trap the user already had keeps running, after ours. ($1 is
			# `trap -p DEBUG` as the caller saw it: a function does not see the
			# DEBUG trap, as it does not inherit it.)
			__rw_prev=$1
			if [[ $__rw_prev != *__rw_* ]]; then
				__rw_prev=${__rw_prev#"trap -- '"}
				__rw_prev=${__rw_prev%"' DEBUG"}
				__rw_prev=${__rw_prev//"'\\''"/"'"}
				if [[ -z $__rw_prev ]]; then
					# The test in the trap itself spares a function call for every
					# simple command but a line's first ([[ ]] leaves $_ alone).
					# shellcheck disable=SC2016 # expanded when the trap runs
					__rw_trap='[[ -z ${__rw_go-} || $BASH_SUBSHELL != 0 || $BASH_COMMAND == __rw_precmd* ]] || __rw_begin "$BASH_COMMAND" "$_"'
					__rw_quiet=''
					\builtin trap -- "$__rw_trap" DEBUG
				else
					# The user's trap then finds $? and $_ as they were (as an if's
					# condition, a non-zero status does not trip errexit).
					# shellcheck disable=SC2064 # the previous trap is expanded now, on purpose
					\builtin trap "if __rw_chain \"\$?\" \"\$_\"; then $__rw_prev
else $__rw_prev
fi" DEBUG
				fi
			fi
			return 0
		}

		# The session's first record, with the environment it starts from. It is
		# written at the first prompt, once the rc files are done; $1 is the
		# step of the parent session this one branches from, if it does.
		__rw_open() {
			__rw_opened=1
			__rw_now
			# The session's spool and scratch file are created here, 0600 whatever
			# the user's umask, which is put back as it was. (Read from /proc:
			# capturing what `umask` prints would fork.)
			local __rw_um=''
			\builtin read -r -d '' __rw_um </proc/self/status
			__rw_um=${__rw_um#*$'\n'Umask:}
			__rw_um=${__rw_um%%$'\n'*}
			__rw_um=${__rw_um//[[:space:]]/}
			[[ $__rw_um == [0-7][0-7][0-7][0-7] ]] || __rw_um=''
			[[ -z $__rw_um ]] || \builtin umask 077
			\builtin : >>"$__rw_histfile"
			{
				\builtin printf '%s\0' $'\036RW1' S "$__rw_sid" "$__rw_parent" bash "$BASH_VERSION" \
					"$$" "$__rw_tty" "$__rw_t" "$PWD" "${HOSTNAME-}" "${USER:-$__rw_user}" "$1" \
					declare && \builtin export -p && \builtin printf '\0\036END\0'
			} >>"$__rw_spool" || {
				__rw_wfail=1 __rw_opened='' # opened again at the next prompt
			}
			[[ -z $__rw_um ]] || \builtin umask "$__rw_um"
		}

		# The session's start written again, to a spool made anew: what was
		# written before is lost (the L record says how much), what comes next is not.
		__rw_reopen() {
			local __rw_keep=$__rw_t
			__rw_open ""
			__rw_t=$__rw_keep
		}

		# `rw back`, `rw branch` and `rw rewind` call this (through the rw
		# function): what is typed next records into a new session, a branch at
		# step $1 of session $2 (default: this one).
		__rw_branch() {
			\builtin local -
			\builtin set +aefux +o pipefail
			__rw_parent=${2:-$__rw_sid}
			[[ ! -p $__rw_ack ]] || __rw_watching=1
			__rw_now
			\builtin printf -v __rw_sid '%s%05x%04x' "${__rw_t//[.,]/}" "$$" "$RANDOM"
			\builtin export RW_SESSION=$__rw_sid
			__rw_spool=$__rw_spool_dir/$__rw_sid.spool
			__rw_histfile=$__rw_scratch_dir/$__rw_sid.hist
			__rw_ack=$__rw_scratch_dir/$__rw_sid.ack
			__rw_seq=0
			[[ -z $__rw_watching ]] || __rw_make_ack
			__rw_open "$1" 2>/dev/null
			return 0
		}
		__rw_opened='' __rw_trap='' __rw_quiet=''
		__rw_pcmd='{ __rw_precmd 3; } 3>&2 2>/dev/null'
		[[ -z $__rw_watching ]] || __rw_make_ack
		__rw_ensure_daemon 2>/dev/null
	fi
	__rw_install "$(\builtin trap -p DEBUG)"
fi
