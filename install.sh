#!/usr/bin/env bash
# Install rw from the directory this script lives in: a private virtual
# environment, `rw` linked into ~/.local/bin, one hook line in ~/.bashrc and
# ~/.zshrc, and the daemon started. Running it again upgrades in place.
set -euo pipefail

readonly MARKER='# added by rw install.sh'

usage() {
	cat <<'EOF'
Usage: ./install.sh [--no-rc]
       ./install.sh --uninstall [--purge] [--no-rc]

Installs rw from this directory into its own virtual environment, links `rw`
into the bin directory, adds one line to ~/.bashrc and ~/.zshrc (those that
exist; a backup is made first, the last three kept) and starts the rw
daemon. Safe to run again: it upgrades in place and never adds a second line.

Options:
  --no-rc      leave ~/.bashrc and ~/.zshrc alone
  --uninstall  stop the daemon, remove the rc lines, the link and the
               environment; what rw recorded is kept
  --purge      with --uninstall: also delete recorded data, configuration
               and runtime files (socket, pid and lock files)
  -h, --help   show this help

Environment:
  RW_INSTALL_DIR  the virtual environment (default: $XDG_DATA_HOME/rw/venv,
                  i.e. ~/.local/share/rw/venv)
  RW_BIN_DIR      where `rw` is linked (default: ~/.local/bin)
  PYTHON          the Python (>= 3.9) to build the environment with (default: python3)
  RW_PIP_ARGS     extra arguments for pip install, e.g. "--index-url URL"
  RW_HOME         keep all of rw's data, config and runtime files under one directory
EOF
}

die() {
	local code=$1
	shift
	printf 'install.sh: %s\n' "$*" >&2
	exit "$code"
}

warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }

absolute() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s/%s\n' "$PWD" "$1" ;;
	esac
}

mode=install
edit_rc=1
purge=0
for arg in "$@"; do
	case $arg in
	-h | --help)
		usage
		exit 0
		;;
	--no-rc) edit_rc=0 ;;
	--uninstall) mode=uninstall ;;
	--purge) purge=1 ;;
	*) die 2 "unknown option: $arg (see ./install.sh --help)" ;;
	esac
done
if ((purge)) && [[ $mode != uninstall ]]; then
	die 2 "--purge only goes with --uninstall"
fi

: "${HOME:?HOME is not set}"
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
venv=$(absolute "${RW_INSTALL_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/rw/venv}")
bin_dir=$(absolute "${RW_BIN_DIR:-$HOME/.local/bin}")
link=$bin_dir/rw
rc_files=("$HOME/.bashrc" "${ZDOTDIR:-$HOME}/.zshrc")
rc_shells=(bash zsh)

# The hook line names rw by absolute path, so it works whatever PATH is, and
# does nothing (and prints nothing) once rw has been removed.
rc_line() {
	local ref safe='^[A-Za-z0-9_./+,@:-]+$'
	if [[ $link == "$HOME"/* && ${link#"$HOME"} =~ $safe ]]; then
		ref="\"\$HOME${link#"$HOME"}\""
	else
		ref=$(printf '%q' "$link")
	fi
	# shellcheck disable=SC2016 # the $( ) is for the rc file, not for now
	printf 'if [ -x %s ]; then eval "$(%s init %s)"; fi  %s\n' "$ref" "$ref" "$1" "$MARKER"
}

readonly KEEP_BACKUPS=3

# A copy of an rc file before we change it: one per content (a copy already
# made of the same text is renamed to be the newest, not made again), and
# only the last $KEEP_BACKUPS kept, so install/uninstall cycles do not pile up.
backup() {
	local dest n=0 old same='' all=()
	dest=$1.rw-backup-$(date +%Y%m%d-%H%M%S)
	local base=$dest
	while [[ -e $dest ]]; do
		dest=$base.$((++n))
	done
	for old in "$1".rw-backup-*; do
		[[ -f $old && ! -L $old ]] && cmp -s -- "$1" "$old" && same=$old
	done
	if [[ -n $same ]]; then
		mv -- "$same" "$dest"
	else
		cp -p -- "$1" "$dest"
	fi
	printf '  backed up %s to %s\n' "$1" "$dest"
	for old in "$1".rw-backup-*; do
		[[ -f $old && ! -L $old ]] && all+=("$old")
	done
	# Oldest first: the names hold the time, and a same-second copy gets .1, .2 ...
	mapfile -t all < <(printf '%s\n' "${all[@]}" | sort -V)
	for ((n = 0; n + KEEP_BACKUPS < ${#all[@]}; n++)); do
		rm -f -- "${all[n]}"
	done
}

# Drop our lines in place (not by renaming), so a symlinked rc file stays a
# symlink and keeps its owner and mode.
strip_rc() {
	local tmp
	tmp=$(mktemp)
	grep -vF -- "$MARKER" "$1" >"$tmp" || true
	cat -- "$tmp" >"$1"
	rm -f -- "$tmp"
}

hook_rc() {
	local file=$1 shell=$2 want ours exact
	[[ -f $file ]] || return 0
	want=$(rc_line "$shell")
	ours=$(grep -cF -- "$MARKER" "$file" || true)
	exact=$(grep -cxF -- "$want" "$file" || true)
	if [[ $ours == 1 && $exact == 1 ]]; then
		printf '  %s already loads rw\n' "$file"
		return 0
	fi
	[[ -w $file ]] || die 1 "$file is not writable; add this line to it yourself: $want"
	backup "$file"
	if [[ $ours != 0 ]]; then
		strip_rc "$file"
	fi
	if [[ -s $file && -n $(tail -c 1 -- "$file") ]]; then
		printf '\n' >>"$file"
	fi
	printf '%s\n' "$want" >>"$file"
	printf '  added the rw hook to %s\n' "$file"
}

unhook_rc() {
	local file=$1
	[[ -f $file ]] && grep -qF -- "$MARKER" "$file" || return 0
	[[ -w $file ]] || die 1 "$file is not writable; remove the line ending in '$MARKER' yourself"
	backup "$file"
	strip_rc "$file"
	printf '  removed the rw hook from %s\n' "$file"
}

find_python() {
	local py=${PYTHON:-python3}
	command -v "$py" >/dev/null 2>&1 ||
		die 1 "cannot find $py; install Python >= 3.9 or point PYTHON at one"
	"$py" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null ||
		die 1 "$py is not Python >= 3.9; point PYTHON at a newer one"
	printf '%s\n' "$py"
}

make_venv() {
	local py
	if [[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
		return 0
	fi
	if [[ -e $venv && ! -f $venv/pyvenv.cfg && -n $(ls -A -- "$venv" 2>/dev/null) ]]; then
		die 1 "$venv exists and is not a virtual environment; move it away or set RW_INSTALL_DIR"
	fi
	py=$(find_python)
	printf 'creating a virtual environment in %s\n' "$venv"
	mkdir -p -- "$(dirname -- "$venv")"
	"$py" -m venv --clear "$venv" ||
		die 1 "$py could not create a virtual environment (on Debian and Ubuntu: apt-get install python3-venv)"
}

do_install() {
	local pip_args=() version
	[[ -f $src/pyproject.toml && -d $src/rewind_daemon ]] ||
		die 1 "$src does not look like the rw source tree"
	make_venv
	read -r -a pip_args <<<"${RW_PIP_ARGS:-}"
	printf 'installing rw from %s\n' "$src"
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}" "$src" ||
		die 1 "pip could not install rw into $venv"
	"$venv/bin/rw" --version >/dev/null || die 1 "$venv/bin/rw does not run"

	mkdir -p -- "$bin_dir"
	if [[ -e $link && ! -L $link ]]; then
		die 1 "$link exists and is not a link; remove it or set RW_BIN_DIR"
	fi
	ln -sfn -- "$venv/bin/rw" "$link"
	printf 'linked %s -> %s\n' "$link" "$venv/bin/rw"

	if ((edit_rc)); then
		local i
		for i in "${!rc_files[@]}"; do
			hook_rc "${rc_files[i]}" "${rc_shells[i]}"
		done
	fi

	# Restart, so a running daemon of an older version is replaced.
	"$link" daemon stop >/dev/null 2>&1 || true
	"$link" daemon start || die 1 "rw is installed but its daemon did not start; run: rw doctor"

	version=$("$link" --version)
	printf '\nrw %s is ready. Shells started from now on are recorded; try: rw log\n' "${version##* }"
	if ((!edit_rc)); then
		printf 'To record your shells, add this line to ~/.bashrc (with "init zsh", to ~/.zshrc):\n  %s\n' "$(rc_line bash)"
	fi
	case ":$PATH:" in
	*":$bin_dir:"*) ;;
	*)
		# shellcheck disable=SC2016 # $PATH is meant literally, for the user to paste
		printf 'note: %s is not on your PATH. Hooked shells find rw anyway; for scripts, add\n  export PATH="%s:$PATH"\n' "$bin_dir" "$bin_dir"
		;;
	esac
}

# Where rw keeps data, config and runtime files, asked of the installed
# package while it is there (so RW_HOME and XDG variables count the same way).
rw_dirs() {
	if [[ -x $venv/bin/python ]] &&
		"$venv/bin/python" -c 'from rewind_daemon.paths import resolve; p = resolve(); print(p.data_dir); print(p.config_dir); print(p.runtime_dir)' 2>/dev/null; then
		return 0
	fi
	if [[ -n ${RW_HOME-} ]]; then
		local home
		home=$(absolute "$RW_HOME")
		printf '%s\n' "$home/data" "$home/config" "$home/run"
	else
		local data=${XDG_DATA_HOME:-$HOME/.local/share}/rw host runtime=''
		printf '%s\n' "$data" "${XDG_CONFIG_HOME:-$HOME/.config}/rw"
		# The runtime dir (socket, pid and lock files) is where rw recorded it.
		host=$(uname -n)
		if [[ -f $data/runtime-${host//\//_} ]]; then
			read -r runtime <"$data/runtime-${host//\//_}" || true
		fi
		[[ -z $runtime ]] || printf '%s\n' "$runtime"
	fi
}

do_uninstall() {
	local dirs=() d i
	mapfile -t dirs < <(rw_dirs)

	if ((edit_rc)); then
		for i in "${!rc_files[@]}"; do
			unhook_rc "${rc_files[i]}"
		done
	fi
	# The link goes before the daemon stops: open shells start the daemon
	# through it, and must not bring it back.
	if [[ -L $link && $(readlink -- "$link") == "$venv/bin/rw" ]]; then
		rm -f -- "$link"
		printf '  removed %s\n' "$link"
	elif [[ -e $link || -L $link ]]; then
		warn "$link does not point into $venv; left it alone"
	fi
	if [[ -x $venv/bin/rw ]]; then
		"$venv/bin/rw" daemon stop || warn "could not stop the rw daemon"
	fi
	if [[ -f $venv/pyvenv.cfg ]]; then
		rm -rf -- "$venv"
		printf '  removed %s\n' "$venv"
		rmdir -- "$(dirname -- "$venv")" 2>/dev/null || true
	elif [[ -e $venv ]]; then
		warn "$venv is not a virtual environment; left it alone"
	fi

	if ((purge)); then
		for d in "${dirs[@]}"; do
			case $d in
			"" | / | "$HOME" | "$HOME/") warn "refusing to delete $d" ;;
			*) if [[ $d == "${dirs[2]-}" && -e $d && (-L $d || ! -O $d || ! -d $d) ]]; then
				warn "$d is not a directory of yours; left it alone"
			elif [[ -e $d ]]; then
				rm -rf -- "$d"
				printf '  deleted %s\n' "$d"
			fi ;;
			esac
		done
		printf 'rw is uninstalled, and its data and configuration are deleted.\n'
	else
		printf 'rw is uninstalled. What it recorded is kept in %s (./install.sh --uninstall --purge deletes it).\n' "${dirs[0]}"
	fi
}

"do_$mode"
