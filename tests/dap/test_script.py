"""The splitter: a script's top-level commands, each one step at its lines."""

from __future__ import annotations

import subprocess

import pytest

from rewind_daemon.dap.script import ScriptError, split

TRICKY = r"""#!/usr/bin/env bash
# a comment

set -u
export A=1   # trailing comment
if [ "$A" = 1 ]; then
  echo "yes )"
fi
for i in 1 2; do echo "$i"; done
greet() {
  echo "hi $1"
}
function other
{
  echo 'it''s } fi'
}
function third { echo x; }
cat <<EOF2 | tr a-z A-Z
body with ' and ) and fi
EOF2
cat <<-'END'
	tabbed $HOME
	END
echo one \
  two \
  three
ls / |
  wc -l
case $A in
  1|if) echo one ;;
  (2) echo two ;;
  *) echo other ;;
esac
( cd / && pwd )
{ echo a; echo b; }
x=$(echo "$(date)" ) y=`echo hi`
echo "${A:-}" $(( 1 + 2 )) ${#A} "$#"
while false
do
  :
done
echo a; echo b
echo done; echo fi
[[ $A == 1 ]] && {
  echo braced
}
echo $'it\'s'
echo "a
multi-line string"
echo end # the end
"""

EXPECTED = [  # (first line, last line) of each step
    (4, 4), (5, 5), (6, 8), (9, 9), (10, 12), (13, 16), (17, 17), (18, 20), (21, 23),
    (24, 26), (27, 28), (29, 33), (34, 34), (35, 35), (36, 36), (37, 37), (38, 41),
    (42, 42), (43, 43), (44, 46), (47, 47), (48, 49), (50, 50),
]  # fmt: skip


def test_each_top_level_command_is_one_step_at_its_lines():
    steps = split(TRICKY)
    assert [(s.line, s.end_line) for s in steps] == EXPECTED
    assert [s.number for s in steps] == list(range(1, len(EXPECTED) + 1))
    lines = TRICKY.split("\n")
    for s in steps:
        assert s.command == "\n".join(lines[s.line - 1 : s.end_line]), s
    assert steps[7].command.endswith("EOF2")  # the here-document is its command's


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_every_step_is_a_whole_command_for_the_shell(shell):
    """The shell's own parser agrees: each step parses alone."""
    for s in split(TRICKY):
        proc = subprocess.run([shell, "-n", "-c", s.command], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, (s, proc.stderr)


def test_running_the_steps_one_by_one_prints_what_the_script_prints(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text(TRICKY.replace("$(date)", "date"))
    whole = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path)
    joined = "\n".join(s.command for s in split(script.read_text()))
    parts = subprocess.run(["bash", "-c", joined], capture_output=True, text=True, cwd=tmp_path)
    assert whole.stdout == parts.stdout and whole.stdout.count("\n") > 20


def test_comments_blank_lines_and_the_shebang_are_not_steps():
    assert split("#!/bin/sh\n\n# only comments\n   \n\t# here\n") == []
    assert [s.line for s in split("#!/bin/sh\necho a # not a comment's step\n\n#x\necho b")] == [
        2,
        5,
    ]


def test_a_pattern_named_like_a_reserved_word_does_not_open_anything():
    steps = split("case $x in\n  fi|done) echo odd ;;\n  if) : ;;\nesac\necho after\n")
    assert [(s.line, s.end_line) for s in steps] == [(1, 4), (5, 5)]
    steps = split("(case $x in a) : ;; esac)\necho after\n")
    assert [(s.line, s.end_line) for s in steps] == [(1, 1), (2, 2)]


ZSH_SHORT = """\
if [[ -n $HOME ]] {
  print home
} else {
  print none
}
for x (a b) {
  print $x
}
repeat 2 { print r }
if { true } && [[ -n x ]]; then
  print group-in-condition
fi
for i in 1 2; do { print $i } done
while false; do :; done
print end
"""


def test_zshs_short_forms_and_groups_in_conditions_are_one_step_each():
    steps = split(ZSH_SHORT, "zsh")
    assert [(s.line, s.end_line) for s in steps] == [
        (1, 5), (6, 8), (9, 9), (10, 12), (13, 13), (14, 14), (15, 15),
    ]  # fmt: skip
    for s in steps:
        proc = subprocess.run(["zsh", "-n", "-c", s.command], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, (s, proc.stderr)
    out = subprocess.run(["zsh", "-f", "-c", ZSH_SHORT], capture_output=True, text=True).stdout
    assert out.split() == ["home", "a", "b", "r", "r", "group-in-condition", "1", "2", "end"]


def test_function_bodies_on_the_next_line_belong_to_the_function():
    steps = split("f()\n{\n  :\n}\nfunction g\n{ :; }\necho x\n")
    assert [(s.line, s.end_line) for s in steps] == [(1, 4), (5, 6), (7, 7)]


@pytest.mark.parametrize(
    "text, what",
    [
        ("echo 'never closed\necho b\n", "' that is never closed"),
        ('echo "never closed\n', '" that is never closed'),
        ("if true; then\n  echo a\n", "`fi`"),
        ("cat <<EOF\nbody\n", "EOF"),
        ("echo $(date\n", "$( that is never closed"),
        ("for i in 1; do\n", "`done`"),
        ("x=$(case a in\n  a) echo ;;\nesac\necho b\n", "$( that is never closed"),
        ("x=$(cat <<EOF\nbody\n)\n", "here-document 'EOF' is never closed"),
        ("foreach x (a b)\n  print $x\n", "`end`"),
    ],
)
def test_a_command_that_never_ends_is_an_error_naming_its_line(text, what):
    with pytest.raises(ScriptError) as e:
        split("echo first\n" + text, "zsh" if "foreach" in text else "bash")
    assert "line 2" in str(e.value) and what in str(e.value)


def test_the_steps_of_a_script_in_any_order_are_found_again():
    """Shuffled, the tricky script's commands are still its steps, each whole."""
    import random

    commands = [s.command for s in split(TRICKY)]
    rng = random.Random(15)
    for _ in range(30):
        order = rng.sample(commands, len(commands))
        blank = rng.choice(["\n", "\n\n", "\n# a comment\n", "\n   \n"])
        assert [s.command for s in split(blank.join(order) + "\n")] == order


# What the splitter once got wrong, each against what the shell itself parses
# and runs: (shell, script, the (first, last) lines of each step).
GAPS = {
    "a case in $( )": (
        "bash", 'x=$(case a in\n  a) echo A ;;\nesac)\necho "$x after"\n', [(1, 3), (4, 4)]
    ),
    "a case with ;;& in $( )": (
        "bash", "x=$(case a in\n  a) echo 1 ;;&\n  *) echo 2 ;;\nesac)\necho $x\n", [(1, 4), (5, 5)]
    ),
    "a here-document in $( )": (
        "bash", 'x=$(cat <<EOF\nbody )\nEOF\n)\necho "$x"\n', [(1, 4), (5, 5)]
    ),
    "a <<- here-document with tabs in $( )": (
        "bash", 'x=$(cat <<-EOF\n\tbody )\n\tEOF\n)\necho "$x"\n', [(1, 4), (5, 5)]
    ),
    "a quoted delimiter in $( ), a lone quote in the body": (
        "bash", "x=$(cat <<'EOF'\nit's ) \"\nEOF\n)\necho \"$x\"\n", [(1, 4), (5, 5)]
    ),
    "a here-string, then a here-document": (
        "bash", "cat <<< x <<EOF\nbody\nEOF\necho after\n", [(1, 3), (4, 4)]
    ),
    "a here-string of a $( ) over two lines": (
        "bash", 'cat <<< "$(echo a\n)"\necho after\n', [(1, 2), (3, 3)]
    ),
    "a shift in an arithmetic command": ("bash", '(( x = 1 << 2 ))\necho "$x"\n', [(1, 1), (2, 2)]),
    "a shift in for (( ))": (
        "bash", "for ((i = 1; i << 1 < 8; i++)); do echo $i; done\necho after\n", [(1, 1), (2, 2)]
    ),
    "coproc NAME { } over lines": (
        "bash",
        'coproc C {\n  echo co; read -r _\n}\nread -r line <&"${C[0]}"; echo "got $line"\n',
        [(1, 3), (4, 4)],
    ),
    "coproc { } over lines": (
        "bash",
        'coproc {\n  echo co; read -r _\n}\nread -r line <&"${COPROC[0]}"; echo "got $line"\n',
        [(1, 3), (4, 4)],
    ),
    "time -p { } over lines": (
        "bash", "exec 2>/dev/null\ntime -p {\n  echo a\n}\necho after\n", [(1, 1), (2, 4), (5, 5)]
    ),
    "a case in $( ) in zsh": (
        "zsh", 'x=$(case a in\n  a) print A ;;\nesac)\nprint "$x after"\n', [(1, 3), (4, 4)]
    ),
    "zsh's foreach ... end": (
        "zsh", "foreach x (a b)\n  print $x\nend\nprint after\n", [(1, 3), (4, 4)]
    ),
    "zsh's foreach with a loop in it": (
        "zsh", "foreach x (a b)\n  for y in 1; do print $x$y; done\nend\nprint after\n",
        [(1, 3), (4, 4)],
    ),
    "zsh's { } always { }": (
        "zsh", "{\n  print try\n} always {\n  print finally\n}\nprint after\n", [(1, 5), (6, 6)]
    ),
    "zsh's function with two names": (
        "zsh", "function a b {\n  print in $0\n}\nb\n", [(1, 3), (4, 4)]
    ),
    "zsh's short for": ("zsh", "for x in a b; print $x\nprint after\n", [(1, 1), (2, 2)]),
    "zsh's short for (words)": ("zsh", "for x (a b) print $x\nprint after\n", [(1, 1), (2, 2)]),
    "zsh's short for, its body on the next line": (
        "zsh", "for x in a b\n  print $x\nprint after\n", [(1, 2), (3, 3)]
    ),
    "zsh's short for (( ))": (
        "zsh", "for ((i = 0; i < 2; i++)) print $i\nprint after\n", [(1, 1), (2, 2)]
    ),
    "zsh's case WORD { }": (
        "zsh", "case x {\n  x) print a ;;\n  (y|z) print b ;;\n}\nprint after\n", [(1, 4), (5, 5)]
    ),
    "zsh's case WORD { } on one line": (
        "zsh", "case x { x) print a ;; }\nprint after\n", [(1, 1), (2, 2)]
    ),
    "zsh's short if [[ ]]": ("zsh", "if [[ -n x ]] print yes\nprint after\n", [(1, 1), (2, 2)]),
    "zsh's short if (( ))": ("zsh", "if (( 1 < 2 )) print yes\nprint after\n", [(1, 1), (2, 2)]),
    "zsh's short repeat": ("zsh", "repeat 2 print r\nprint after\n", [(1, 1), (2, 2)]),
}  # fmt: skip


# What it got right before, held to the same checks: the constructs a
# careful reading names, each beside what could be mistaken for its end.
HANDLED = {
    "<<- with tabs and a quoted delimiter": (
        "bash", "cat <<-'E O'\n\tit's $HOME\n\tE O\necho after\n", [(1, 3), (4, 4)]
    ),
    "a delimiter quoted with a backslash": (
        "bash", "cat <<\\EOF\n$x )\nEOF\necho after\n", [(1, 3), (4, 4)]
    ),
    "two here-documents on one line": (
        "bash", "cat <<A; cat <<B\na\nA\nb\nB\necho after\n", [(1, 5), (6, 6)]
    ),
    "$'...' with an escaped quote and a )": (
        "bash", "echo $'it\\'s )'\necho after\n", [(1, 1), (2, 2)]
    ),
    "nested $( ) with a case pattern's ) on one line": (
        "bash", "echo $(echo $(case x in x) echo y;; esac))\necho after\n", [(1, 1), (2, 2)]
    ),
    "backslash-newline continuations": (
        "bash", "echo a \\\n  b \\\n  c\necho after\n", [(1, 3), (4, 4)]
    ),
    "a { } group over lines": ("bash", "{ echo a\n  echo b; }\necho after\n", [(1, 2), (3, 3)]),
    "function f { } over lines": (
        "bash", "function f {\n  echo in f\n}\nf\n", [(1, 3), (4, 4)]
    ),
    "an arithmetic command over lines": (
        "bash", "((\n  x = 1 + 2\n))\necho $x\n", [(1, 3), (4, 4)]
    ),
    "[[ ]] with < and >": (
        "bash", "[[ a < b ]] && echo lt\n[[ b > a ]] && echo gt\necho after\n",
        [(1, 1), (2, 2), (3, 3)]
    ),
    "a comment with a quote after a command": (
        "bash", "echo a # it's\necho after\n", [(1, 1), (2, 2)]
    ),
    "a comment with a quote inside if": (
        "bash", "if true; then # it's\n  echo a # \"\nfi\necho after\n", [(1, 3), (4, 4)]
    ),
    "a comment with a ) inside $( )": (
        "bash", "x=$(\n  # a comment )\n  echo a\n)\necho $x\n", [(1, 4), (5, 5)]
    ),
    "a case in a pipeline": (
        "bash", "case x in x) echo a ;; esac | cat\necho after\n", [(1, 1), (2, 2)]
    ),
    "a multi-line array": ("bash", "arr=(\n  a\n  b\n)\necho ${arr[1]}\n", [(1, 4), (5, 5)]),
    "zsh's glob qualifiers and parameter flags": (
        "zsh", "a=(x y); print ${(j:,:)a} /(N/)\nprint after\n", [(1, 1), (2, 2)]
    ),
    "zsh's anonymous function": ("zsh", "() {\n  print $1\n} arg\nprint after\n", [(1, 3), (4, 4)]),
    "zsh's if [[ ]] then on one line, && between tests": (
        "zsh",
        "if [[ -n x ]] then\n  print a\nfi\n"
        "if [[ -n x ]] && [[ -n y ]]; then print b; fi\nprint after\n",
        [(1, 3), (4, 4), (5, 5)],
    ),
    "zsh's repeat with do": (
        "zsh", "repeat 2 do\n  print r\ndone\nprint after\n", [(1, 3), (4, 4)]
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", [*GAPS, *HANDLED])
def test_each_construct_is_one_step_as_the_shell_parses_it(name):
    shell, text, spans = GAPS.get(name) or HANDLED[name]
    steps = split(text, shell)
    assert [(s.line, s.end_line) for s in steps] == spans
    for s in steps:
        proc = subprocess.run([shell, "-n", "-c", s.command], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, (s, proc.stderr)
    # run one by one, the steps print what the whole script prints
    argv = [shell, "-f", "-c"] if shell == "zsh" else [shell, "-c"]
    whole = subprocess.run([*argv, text], capture_output=True, text=True)
    parts = subprocess.run(
        [*argv, "\n".join(s.command for s in steps)], capture_output=True, text=True
    )
    assert whole.returncode == 0 and whole.stdout and not whole.stderr, whole
    assert (parts.stdout, parts.stderr) == (whole.stdout, whole.stderr)
