# shellcheck shell=bash
# rw: TAB completion for bash, printed by `rw init bash` after the hooks:
# commands, options, session names and ids, `current`, `last`, step numbers.
# It costs the prompt nothing: rw runs (click's completion protocol) only when
# TAB is pressed on an `rw` command line.

__rw_complete() {
	local __rw_out __rw_item
	COMPREPLY=()
	__rw_out=$(COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD _RW_COMPLETE=bash_complete \
		"${__rw_bin:-rw}" 2>/dev/null) || return 0
	# One item a line, "type,value"; read, never word-split or globbed.
	while IFS= read -r __rw_item; do
		case ${__rw_item%%,*} in
		plain) COMPREPLY+=("${__rw_item#*,}") ;;
		dir) compopt -o dirnames 2>/dev/null || : ;;
		file) compopt -o default 2>/dev/null || : ;;
		esac
	done <<<"$__rw_out"
	return 0
}

if [[ $- == *i* ]]; then
	# (-o default: where rw offers nothing, such as a FILE, bash completes file names.)
	\builtin complete -o default -o nosort -F __rw_complete rw 2>/dev/null ||
		\builtin complete -o default -F __rw_complete rw 2>/dev/null
fi
