# shellcheck shell=bash disable=SC2154,SC2296,SC2298,SC2299,SC2034
# rw: capture hooks for zsh >= 5, printed by `rw init zsh`.
# Add to ~/.zshrc:   eval "$(rw init zsh)"
#
# Every command is appended as a record to this session's spool file, which
# the rw daemon follows. Writing to a regular file never blocks and never
# raises SIGPIPE, whatever state the daemon is in, and nothing here forks on
# a command's path: only builtins run. (Linted as bash; zsh syntax where the
# disables above say so.)

if [[ -o interactive ]]; then
	if [[ -z ${__rw_sid-} ]]; then
		\builtin zmodload zsh/datetime 2>/dev/null
		typeset -g __rw_bin=@RW_BIN@
		typeset -g __rw_spool_dir=@RW_SPOOL_DIR@
		typeset -g __rw_pid_file=@RW_PID_FILE@
		typeset -g __rw_stop_file=@RW_STOP_FILE@
		typeset -g __rw_autostart=@RW_AUTOSTART@
		typeset -g __rw_tty=@RW_TTY@
		typeset -g __rw_user=@RW_USER@
		typeset -g __rw_scratch_dir=@RW_SCRATCH_DIR@
		typeset -g __rw_timeout=@RW_TIMEOUT@
		typeset -g __rw_watching=@RW_WATCHING@
		typeset -g __rw_record=@RW_RECORD@
		# Under `rw record`, RW_RECORD is TOKEN:PID:TTY: this shell marks each
		# step for the recorder (OSC 133, written to the terminal itself, so a
		# redirection of the command's output cannot take a mark with it). Only
		# when it names this terminal and a recorder still running: a tmux pane
		# or an ssh login started from a recorded shell inherits it, unrecorded.
		typeset -g __rw_mark=${RW_RECORD-}
		typeset -g __rw_mtty=${__rw_mark#*:}
		__rw_mark=${__rw_mark%%:*}
		typeset -g __rw_mpid=${__rw_mtty%%:*}
		__rw_mtty=${__rw_mtty#*:}
		[[ -n $__rw_mark && $__rw_mark != *[^0-9a-f]* && -n $__rw_mpid && $__rw_mpid != *[^0-9]* &&
			-n ${TTY-} && $__rw_mtty == "$TTY" && -d /proc/$__rw_mpid ]] || __rw_mark='' __rw_mtty=''
		# `[record] output = true` or `rw init zsh --record`: a new terminal shell
		# not recorded yet becomes `rw record` (exec: the terminal keeps one shell;
		# it runs the rc files again, under the recorder). RW_RECORD=off: not this one.
		if [[ $__rw_record == 1 && -z $__rw_mark && ${RW_RECORD-} != off && -z ${RW_BRANCH_INTO-} &&
			-n ${TTY-} && -t 0 && -t 1 && -x $__rw_bin ]]; then
			# A failed exec ends zsh: the interpreter rw's script names is looked for first.
			typeset -g __rw_t=''
			{ \builtin read -r __rw_t <"$__rw_bin"; } 2>/dev/null
			[[ $__rw_t == '#!'* ]] && __rw_t=${${__rw_t#??}%% *} || __rw_t=$__rw_bin
			[[ ! -x $__rw_t ]] || \builtin exec "$__rw_bin" record --or-shell zsh
			\builtin print -ru2 -- 'rw: output is not recorded in this shell: cannot start rw record'
		fi
		typeset -g __rw_t=${EPOCHREALTIME:-$EPOCHSECONDS}
		typeset -g __rw_sid
		\builtin printf -v __rw_sid '%s%05x%04x' "${__rw_t//[.,]/}" "$$" "$RANDOM"
		# `rw branch SESSION STEP --exec` opens this shell to record into a branch
		# it has already made.
		if [[ -n ${RW_BRANCH_INTO-} ]]; then
			__rw_sid=$RW_BRANCH_INTO
			\builtin unset RW_BRANCH_INTO
		fi
		typeset -g __rw_parent=${RW_SESSION-}
		\builtin export RW_SESSION=$__rw_sid
		typeset -g __rw_spool=$__rw_spool_dir/$__rw_sid.spool
		typeset -g __rw_ack=$__rw_scratch_dir/$__rw_sid.ack
		typeset -g __rw_ackfd='' __rw_ackof='' __rw_cold='' __rw_late='' __rw_told=''
		typeset -gi __rw_ackskip=0
		typeset -gi __rw_seq=0
		typeset -g __rw_pending='' __rw_dpid='' __rw_psid='' __rw_pspool='' __rw_unrec='' __rw_pcmd=''
		typeset -g __rw_wfail='' __rw_nlost='' __rw_lost_since='' __rw_why=''
		typeset -gi __rw_next_start=0 __rw_next_check=0
		# The steps of a block of lines being run (see __rw_split).
		typeset -ga __rw_units=() __rw_ustarts=()
		typeset -g __rw_unext='' __rw_unum=''

		__rw_write() {
			# One record: NUL-terminated fields between start and end markers.
			# (Called inside the hooks, whose stderr is /dev/null: zsh reports a
			# failed redirection before a 2>/dev/null beside it would apply.)
			{ \builtin print -rN -- $'\x1eRW1' "$@" $'\x1eEND'; } >>!"$__rw_spool" ||
				__rw_wfail=1
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
			((EPOCHSECONDS >= __rw_next_start)) || return 0
			__rw_next_start=$((EPOCHSECONDS + 30))
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
			\builtin print -ru3 -- "rw: the daemon did not answer within ${__rw_late}s, so this command has no checkpoint of the watched files (see: rw doctor)"
			__rw_late=''
		}

		# Made by the shell when paths are watched, so its first commands wait even
		# while the daemon is still starting (one fork, when a session begins).
		__rw_make_ack() {
			[[ -p $__rw_ack ]] || \command mkfifo -m 600 -- "$__rw_ack" 2>/dev/null || :
		}

		# The hooks zsh calls run in a group with stderr to /dev/null (3: the
		# user's), so that xtrace (which writes to stderr) never traces them;
		# what they tell the user goes to 3. (zsh ignores the redirections of a
		# function's definition when it calls it as a hook.)
		__rw_preexec() {
			{
				\builtin emulate -L zsh
				# $1 is the line as typed (empty when history is off: then $3, the
				# expanded text). A leading space means "do not record".
				local __rw_cmd=${1:-$3}
				if [[ -z $__rw_cmd || $__rw_cmd == [[:space:]]* ]]; then
					__rw_unrec=1
					return 0
				fi
				# Several lines at once (a pasted block): one step for each.
				[[ ${__rw_cmd%$'\n'} != *$'\n'* || -z $1 ]] ||
					__rw_split "$__rw_cmd" "${funcfiletrace[1]##*:}" || __rw_cmd=${__rw_units[1]}
				((++__rw_seq))
				__rw_pending=$__rw_seq __rw_psid=$__rw_sid __rw_pspool=$__rw_spool __rw_pcmd=$__rw_cmd
				# The spool is gone (RW_HOME deleted, then made again by a new daemon):
				# the session starts again in it, or the daemon would not know its steps.
				[[ -e $__rw_spool ]] || __rw_open ""
				# (__rw_write inlined: a zsh function call costs about 10 microseconds.)
				{
					\builtin print -rN -- $'\x1eRW1' B "$__rw_sid" "$__rw_seq" \
						"${EPOCHREALTIME:-$EPOCHSECONDS}" "$PWD" "$__rw_cmd" $'\x1eEND'
				} >>!"$__rw_spool" || __rw_wfail=1
				[[ -z $__rw_mark ]] ||
					{ \builtin print -rn -- $'\e]133;C;rw='"$__rw_mark:$__rw_sid:$__rw_seq"$'\a' >>"$__rw_mtty"; } 2>/dev/null
				[[ ! -p $__rw_ack ]] || {
					__rw_await "$__rw_seq" 2>/dev/null
					[[ -z $__rw_late ]] || __rw_tell_late
				}
				return 0
			} 3>&2 2>/dev/null
		}

		# Recorded, at the prompt: the line that ran has ended with status $1
		# (its D mark) and the prompt starts (A): what is printed until the
		# next C, a background job's lines included, belongs to no step.
		__rw_mark_prompt() {
			local __rw_m=''
			[[ -z $__rw_pending ]] || __rw_m=$'\e]133;D;'"$1;rw=$__rw_mark:$__rw_psid:$__rw_pending"$'\a'
			{ \builtin print -rn -- "$__rw_m"$'\e]133;A;'"rw=$__rw_mark:$__rw_sid:"$'\a' >>"$__rw_mtty"; } 2>/dev/null
		}

		__rw_precmd() {
			{
				local __rw_st=$? __rw_ps="${pipestatus[*]}"
				\builtin emulate -L zsh
				[[ -z $__rw_unext ]] || {
					\builtin unfunction TRAPDEBUG 2>/dev/null
					__rw_unext='' __rw_units=() __rw_ustarts=()
				}
				[[ -z $__rw_mark ]] || __rw_mark_prompt "$__rw_st"
				# (The step's begin went to a spool now gone: its end is not written.)
				[[ -e $__rw_spool ]] || {
					__rw_pending='' __rw_unrec=''
					__rw_open ""
				}
				if [[ -n $__rw_pending ]]; then
					# The environment as `export` lists it, which costs half what
					# collecting NAME=value pairs from $parameters does.
					{
						\builtin print -rN -- $'\x1eRW1' E "$__rw_psid" "$__rw_pending" \
							"${EPOCHREALTIME:-$EPOCHSECONDS}" "$__rw_st" "$__rw_ps" "$PWD" zsh &&
							\builtin export && \builtin print -rn -- $'\0\x1eEND\0'
					} >>!"$__rw_pspool" || __rw_wfail=1
					__rw_pending=
				elif [[ -n $__rw_unrec ]]; then
					# A line not recorded may have exported a secret: the daemon keeps
					# what it set out of the environments stored after it.
					__rw_unrec=
					{
						\builtin print -rN -- $'\x1eRW1' U "$__rw_sid" "${EPOCHREALTIME:-$EPOCHSECONDS}" zsh &&
							\builtin export && \builtin print -rn -- $'\0\x1eEND\0'
					} >>!"$__rw_spool" || __rw_wfail=1
				fi
				[[ -n $__rw_opened ]] || __rw_open ""
				((SECONDS < __rw_next_check)) || __rw_ensure_daemon
				[[ -z $__rw_wfail$__rw_nlost ]] || __rw_lost
				return "$__rw_st"
			} 3>&2 2>/dev/null
		}

		# The lines of a block zsh runs as one (a pasted runbook): its complete
		# commands, each begun where a line begins, are the steps. zsh's own
		# parser tells a complete one: assigning a function's body parses it
		# (and runs nothing). $2: the shell's line number once it has read the
		# block (its lines count on from earlier input). Status 0: one command
		# only, nothing to split.
		__rw_split() {
			\builtin emulate -L zsh
			[[ -o debugbeforecmd && ${#1} -le 65536 && -z ${functions[TRAPDEBUG]-} &&
				$2 == [0-9]* && $2 != *[^0-9]* ]] || return 0
			local -a __rw_ls=("${(@f)1}") __rw_hd __rw_w
			local -i __rw_i __rw_j __rw_from=1
			local __rw_chunk='' __rw_l
			__rw_units=() __rw_ustarts=()
			for ((__rw_i = 1; __rw_i <= ${#__rw_ls}; __rw_i++)); do
				__rw_l=${__rw_ls[__rw_i]}
				__rw_chunk+=${__rw_chunk:+$'\n'}$__rw_l
				# The parser takes a here-document without its end for complete:
				# its lines are read up to the delimiter first.
				if ((${#__rw_hd})); then
					[[ ${__rw_l#"${__rw_l%%[^$'\t']*}"} != "${__rw_hd[1]}" ]] || shift __rw_hd
					((${#__rw_hd})) && continue
				elif [[ $__rw_l == *'<<'* ]]; then
					__rw_w=("${(z)__rw_l}")
					for ((__rw_j = 1; __rw_j < ${#__rw_w}; __rw_j++)); do
						[[ ${__rw_w[__rw_j]} != '<<' && ${__rw_w[__rw_j]} != '<<-' ]] || __rw_hd+=("${(Q)__rw_w[__rw_j + 1]}")
					done
					((${#__rw_hd})) && continue
				fi
				if [[ $__rw_chunk != *[^[:space:]]* ]]; then
					__rw_chunk='' __rw_from=$((__rw_i + 1))
					continue
				fi
				# (A backslash at the end goes on to the next line, which the parser
				# does not know here.)
				[[ $__rw_l != *\\ || $__rw_l == *\\\\ ]] || continue
				functions[__rw_syntax]=$__rw_chunk 2>/dev/null
				((${+functions[__rw_syntax]})) || continue
				\builtin unfunction __rw_syntax
				__rw_units+=("$__rw_chunk")
				__rw_ustarts+=("$__rw_from")
				__rw_chunk='' __rw_from=$((__rw_i + 1))
			done
			# What a last command that did not parse spans is its own.
			[[ -z $__rw_chunk ]] || {
				__rw_units+=("$__rw_chunk")
				__rw_ustarts+=("$__rw_from")
			}
			((${#__rw_units} > 1)) || return 0
			# A DEBUG trap of the user's own is left alone (then the block is one step).
			local __rw_tr=''
			{ \builtin trap >|"$__rw_scratch_dir/$__rw_sid.hist"; } 2>/dev/null || return 0
			\builtin read -r -d '' __rw_tr <"$__rw_scratch_dir/$__rw_sid.hist"
			[[ $__rw_tr != *" DEBUG"* ]] || return 0
			# Where each begins, in the shell's count: the block's lines, and the
			# Enter that ended it, were the last it read.
			local -i __rw_base=$(($2 - ${#1//[^$'\n']/} - 1))
			for ((__rw_i = 1; __rw_i <= ${#__rw_ustarts}; __rw_i++)); do
				__rw_ustarts[__rw_i]=$((__rw_base + __rw_ustarts[__rw_i] - 1))
			done
			__rw_unext=${__rw_ustarts[2]} __rw_unum=1
			# The DEBUG trap runs before each command: ours knows its line in the
			# block, for a command of the shell itself (not of a function or a
			# subshell). A function (a string would reset pipestatus), defined for
			# the shell, not for this function (emulate -L made traps local).
			\builtin unsetopt localtraps
			# shellcheck disable=SC2317 # zsh calls it
			TRAPDEBUG() {
				{
					local __rw_s=$? __rw_p="${pipestatus[*]}"
					((ZSH_SUBSHELL || ${#funcstack} > 1 || ${funcfiletrace[1]##*:} < __rw_unext)) ||
						__rw_unit "${funcfiletrace[1]##*:}" "$__rw_s" "$__rw_p"
					return 0
				} 3>&2 2>/dev/null
			}
			return 1
		}

		# The DEBUG trap, at the first command of a later line of the block ($1:
		# its line number; $2 and $3: $? and pipestatus): the step before it
		# ends, with the status and environment it left, and the one that
		# begins here is recorded.
		__rw_unit() {
			\builtin emulate -L zsh
			local -i __rw_u=$__rw_unum
			while ((__rw_u < ${#__rw_ustarts} && __rw_ustarts[__rw_u + 1] <= $1)); do
				((++__rw_u))
			done
			((__rw_u > __rw_unum)) || return 0
			__rw_unum=$__rw_u
			__rw_unext=${__rw_ustarts[__rw_u + 1]:-1000000000}
			# (Its C, once this line's step is known: a line not recorded has none.)
			[[ -z $__rw_mark || -z $__rw_pending ]] ||
				{ \builtin print -rn -- $'\e]133;D;'"$2;rw=$__rw_mark:$__rw_psid:$__rw_pending"$'\a' >>"$__rw_mtty"; } 2>/dev/null
			if [[ -n $__rw_pending ]]; then
				{
					\builtin print -rN -- $'\x1eRW1' E "$__rw_psid" "$__rw_pending" \
						"${EPOCHREALTIME:-$EPOCHSECONDS}" "$2" "$3" "$PWD" zsh &&
						\builtin export && \builtin print -rn -- $'\0\x1eEND\0'
				} >>!"$__rw_pspool" || __rw_wfail=1
				__rw_pending=
			elif [[ -n $__rw_unrec ]]; then
				__rw_unrec=
				{
					\builtin print -rN -- $'\x1eRW1' U "$__rw_sid" "${EPOCHREALTIME:-$EPOCHSECONDS}" zsh &&
						\builtin export && \builtin print -rn -- $'\0\x1eEND\0'
				} >>!"$__rw_spool" || __rw_wfail=1
			fi
			local __rw_cmd=${__rw_units[__rw_u]}
			if [[ $__rw_cmd == [[:space:]]* ]]; then
				__rw_unrec=1
				return 0
			fi
			((++__rw_seq))
			__rw_pending=$__rw_seq __rw_psid=$__rw_sid __rw_pspool=$__rw_spool __rw_pcmd=$__rw_cmd
			__rw_write B "$__rw_sid" "$__rw_seq" "${EPOCHREALTIME:-$EPOCHSECONDS}" "$PWD" "$__rw_cmd"
			[[ -z $__rw_mark ]] ||
				{ \builtin print -rn -- $'\e]133;C;rw='"$__rw_mark:$__rw_sid:$__rw_seq"$'\a' >>"$__rw_mtty"; } 2>/dev/null
			[[ ! -p $__rw_ack ]] || {
				__rw_await "$__rw_seq" 2>/dev/null
				[[ -z $__rw_late ]] || __rw_tell_late
			}
			return 0
		}

		# zsh runs this hook as it exits (not in a subshell's exit): the step that
		# ended the shell ends too, with the status it exits with when it was
		# `exit` (or logout, bye), else unknown (its terminal closed while it ran).
		__rw_zshexit() {
			{
				local __rw_st=$?
				\builtin emulate -L zsh
				((ZSH_SUBSHELL == 0)) && [[ -n $__rw_pending ]] || return 0
				[[ $__rw_pcmd == exit || $__rw_pcmd == 'exit '* || $__rw_pcmd == logout* ||
					$__rw_pcmd == bye* ]] || __rw_st=''
				{
					\builtin print -rN -- $'\x1eRW1' E "$__rw_psid" "$__rw_pending" \
						"${EPOCHREALTIME:-$EPOCHSECONDS}" "$__rw_st" "$__rw_st" "$PWD" zsh &&
						\builtin export && \builtin print -rn -- $'\0\x1eEND\0'
				} >>!"$__rw_pspool"
				[[ -z $__rw_mark || -z $__rw_st ]] ||
					{ \builtin print -rn -- $'\e]133;D;'"$__rw_st;rw=$__rw_mark:$__rw_psid:$__rw_pending"$'\a' >>"$__rw_mtty"; } 2>/dev/null
				__rw_pending=
				return 0
			} 3>&2 2>/dev/null
		}

		# A record could not be written (no space left, the spool dir gone):
		# count the command lines lost, tell the user once, and once records go
		# through again, leave the daemon a note of the gap (an L record).
		__rw_lost() {
			\builtin emulate -L zsh
			if [[ -n $__rw_wfail ]]; then
				__rw_wfail=
				if [[ -z $__rw_nlost ]]; then
					__rw_nlost=0 __rw_lost_since=${EPOCHREALTIME:-$EPOCHSECONDS}
					if [[ ! -d $__rw_spool_dir ]]; then
						__rw_why="the spool directory $__rw_spool_dir is missing"
					elif [[ ! -w $__rw_spool_dir || (-e $__rw_spool && ! -w $__rw_spool) ]]; then
						__rw_why="$__rw_spool_dir is not writable"
					else
						__rw_why="no space left on device in $__rw_spool_dir"
					fi
					\builtin print -ru3 -- "rw: a command could not be recorded: $__rw_why; until then none will be (see rw doctor)"
				fi
				((++__rw_nlost))
				return 0
			fi
			__rw_write L "$__rw_sid" "$__rw_nlost" "$__rw_lost_since" "${EPOCHREALTIME:-$EPOCHSECONDS}" "$__rw_why"
			if [[ -n $__rw_wfail ]]; then
				__rw_wfail=
			else
				__rw_nlost=
			fi
			return 0
		}

		# The session's first record, with the environment it starts from. It is
		# written at the first prompt, once the rc files are done; $1 is the
		# step of the parent session this one branches from, if it does.
		__rw_open() {
			\builtin emulate -L zsh
			\builtin setopt extendedglob
			__rw_opened=1
			# The session's spool is created here, 0600 whatever the user's umask,
			# which is put back as it was. (Read from /proc: capturing what
			# `umask` prints would fork.)
			local __rw_um=''
			\builtin read -r -d '' __rw_um </proc/self/status
			__rw_um=${${__rw_um#*$'\n'Umask:}%%$'\n'*}
			__rw_um=${__rw_um//[[:space:]]/}
			[[ $__rw_um == [0-7][0-7][0-7][0-7] ]] || __rw_um=''
			[[ -z $__rw_um ]] || \builtin umask 077
			{ \builtin : >>!"$__rw_scratch_dir/$__rw_sid.hist"; } 2>/dev/null # (see __rw_split)
			# (Also called by __rw_branch, outside the hooks' quiet group.)
			{ {
				\builtin print -rN -- $'\x1eRW1' S "$__rw_sid" "$__rw_parent" zsh "$ZSH_VERSION" "$$" \
					"$__rw_tty" "${EPOCHREALTIME:-$EPOCHSECONDS}" "$PWD" "${HOST-}" "${USER:-$__rw_user}" \
					"$1" list0 ${${(k)parameters[(R)*export*]}/(#m)*/$MATCH=${(P)MATCH}} $'\x1eEND'
			} >>!"$__rw_spool"; } 2>/dev/null || {
				__rw_wfail=1 __rw_opened='' # opened again at the next prompt
			}
			[[ -z $__rw_um ]] || \builtin umask "$__rw_um"
		}

		# `rw back`, `rw branch` and `rw rewind` call this (through the rw
		# function): what is typed next records into a new session, a branch at
		# step $1 of session $2 (default: this one).
		__rw_branch() {
			\builtin emulate -L zsh
			__rw_parent=${2:-$__rw_sid}
			[[ ! -p $__rw_ack ]] || __rw_watching=1
			\builtin printf -v __rw_sid '%s%05x%04x' "${${EPOCHREALTIME:-$EPOCHSECONDS}//[.,]/}" \
				"$$" "$RANDOM"
			\builtin export RW_SESSION=$__rw_sid
			__rw_spool=$__rw_spool_dir/$__rw_sid.spool
			__rw_ack=$__rw_scratch_dir/$__rw_sid.ack
			__rw_seq=0
			[[ -z $__rw_watching ]] || __rw_make_ack
			__rw_open "$1"
			return 0
		}
		typeset -g __rw_opened=''
		[[ -z $__rw_watching ]] || __rw_make_ack
		__rw_ensure_daemon
	fi
	# Re-evaluating this file is harmless: our hooks are removed, then added.
	typeset -ga precmd_functions preexec_functions zshexit_functions
	precmd_functions=(__rw_precmd "${(@)precmd_functions:#__rw_precmd}")
	preexec_functions=("${(@)preexec_functions:#__rw_preexec}" __rw_preexec)
	zshexit_functions=("${(@)zshexit_functions:#__rw_zshexit}" __rw_zshexit)
fi
