# shellcheck shell=bash disable=SC2034,SC2154,SC2296
# rw: TAB completion for zsh, printed by `rw init zsh` after the hooks:
# commands, options, session names and ids, `current`, `last`, step numbers
# (with their commands). It costs the prompt nothing: rw runs (click's
# completion protocol) only when TAB is pressed on an `rw` command line. It
# needs zsh's completion system: when compinit has not run yet, it is
# registered at the first prompt instead (once), so rc files may run compinit
# after `rw init`.

__rw_complete() {
	# (Called by compsys, which has set the options it and this need.)
	local -a __rw_resp __rw_plain __rw_described
	local __rw_type __rw_key __rw_descr __rw_i __rw_paths=
	__rw_resp=("${(@f)$(COMP_WORDS="${words[*]}" COMP_CWORD=$((CURRENT - 1)) \
		_RW_COMPLETE=zsh_complete "${__rw_bin:-rw}" 2>/dev/null)}")
	# Three lines an item: its type, its value, its description (`_`: none).
	for ((__rw_i = 1; __rw_i + 2 <= ${#__rw_resp[@]}; __rw_i += 3)); do
		__rw_type=${__rw_resp[__rw_i]} __rw_key=${__rw_resp[__rw_i + 1]}
		__rw_descr=${__rw_resp[__rw_i + 2]}
		case $__rw_type in
		plain)
			if [[ $__rw_descr == _ ]]; then
				__rw_plain+=("$__rw_key")
			else
				__rw_described+=("$__rw_key:$__rw_descr")
			fi
			;;
		dir) __rw_paths=1 && _path_files -/ ;;
		file) __rw_paths=1 && _path_files -f ;;
		esac
	done
	((${#__rw_described})) && _describe -V unsorted __rw_described -U
	((${#__rw_plain})) && compadd -U -V unsorted -a __rw_plain
	# Where rw offers nothing (a FILE, a PATH, a command to guard): file names.
	((${#__rw_described} + ${#__rw_plain})) || [[ -n $__rw_paths ]] || _files
	return 0
}

__rw_compdef() {
	precmd_functions=("${(@)precmd_functions:#__rw_compdef}")
	((${+functions[compdef]})) && compdef __rw_complete rw
	return 0
}

if [[ -o interactive ]]; then
	if ((${+functions[compdef]})); then
		compdef __rw_complete rw
	else
		typeset -ga precmd_functions
		precmd_functions=("${(@)precmd_functions:#__rw_compdef}" __rw_compdef)
	fi
fi
