"""Secret redaction: every rule of the table, the README's copy of it, the
config's additions, and real shells whose secrets never reach the store."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewind_daemon import config, redact
from rewind_daemon.errors import RwError
from rewind_daemon.redact import ENV_RULES, MASK, RULES, TEXT_RULES, Redactor, markdown_table

from .conftest import rw, rw_json, steps_of, write_config

KEY_BODY = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yz"

# Per rule: (text, secret) pairs that must lose the secret. For env rules, a
# variable name.
POSITIVE: dict[str, list[tuple[str, str]]] = {
    "pem-private-key": [
        (f"echo '-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----'", "MIIEow"),
        (f"cat <<'K' > k\n-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n", "aFDrBz9"),
        ("gpg --import <<E\n-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQdGBF\n"
         "-----END PGP PRIVATE KEY BLOCK-----\nE", "lQdGBF"),
        ('printf "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEE\\n-----END EC PRIVATE KEY-----"',
         "MHcCAQEE"),
    ],
    "aws-access-key-id": [("aws --profile x s3 ls # ASIAIOSFODNN7EXAMPLE", "ASIAIOSFODNN7")],
    "github-token": [
        ("echo gho_0123456789abcdefghijklmnopqrstuvwxyzAB | gh auth login", "gho_0123"),
        ("git push https://x:ghs_0123456789abcdefghijklmnopqrstuvwxyzAB@github.com/o", "ghs_"),
    ],
    "github-fine-grained-token": [
        ("curl -H 'Authorization: token github_pat_11AAAA_bbbbbbbbbbbbbbbbbbbbbb' x", "11AAAA"),
        ("echo github_pat_11ABCDEFG0123456789_abcdefghijklmnop > t", "github_pat_11"),
    ],
    "gitlab-token": [
        ("glab auth login --token glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-xxxx"),
        ("gitlab-runner register --token glrt-abcdefghijklmnopqrst", "glrt-abcd"),
    ],
    "slack-token": [("curl -d token=xoxp-1234-5678-abcdefghij https://slack.com/api", "xoxp-")],
    "slack-webhook": [("notify https://hooks.slack.com/services/T00/B00/abcDEF", "T00/B00")],
    "stripe-key": [
        ("stripe login --api-key rk_live_51Habcdefghijklmnop", "rk_live_51H"),
        ("echo sk_test_4eC39HqLyjWDarjtT1zdp7dc | stripe", "sk_test_4eC"),
    ],
    "vault-token": [("VAULT_TOKEN=hvs.CAESIJ2rjxQq3RWE8AbGfQ1pZxk0 vault kv get x", "CAESIJ2")],
    "vault-token-legacy": [("vault token lookup s.Oi1lRMJ2XrJkhKjUbJjNXoXz", "Oi1lRMJ2")],
    "npm-token": [("echo //r/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789 > .npmrc",
                   "npm_abcdef")],
    "authorization-header": [("wget --header='Proxy-Authorization: Basic dXNlcjpwYXNz' x",
                              "dXNlcjpwYXNz")],
    "url-credentials": [("git clone https://alice:pa55w0rd@example.com/r.git", "pa55w0rd")],
    "mysql-password": [
        ("mysqldump -uroot -phunter2 app > app.sql", "hunter2"),
        ("mysql -h db -p'pass word' -e 'select 1'", "pass word"),
        ("mariadb -u app -p\"s3 cret\" app", "s3 cret"),
        ("/usr/bin/mysql -pHunter2", "Hunter2"),
    ],
    "curl-user": [
        ("curl -s -u 'alice:pa ss' https://example.com", "pa ss"),
        ('curl --user "alice:hunter2" https://x', "hunter2"),
        ("curl -ualice:hunter2 https://x", "hunter2"),
        ("curl --user=alice:hunter2 https://x", "hunter2"),
        ("curl -x proxy:3128 -U bob:proxypw https://x", "proxypw"),
    ],
    "sshpass": [
        ("sshpass -phunter2 scp f host:", "hunter2"),
        ("sshpass -v -p 'pass word' ssh host", "pass word"),
    ],
    "docker-login": [
        ("docker login -phunter2 -u ci registry", "hunter2"),
        ("podman login -u ci -p=hunter2 quay.io", "hunter2"),
        ("docker --config /tmp/c login -u ci -p hunter2 ghcr.io", "hunter2"),
    ],
    "openssl-pass": [
        ("openssl pkcs12 -export -in c.pem -passout pass:hunter2 -out c.p12", "hunter2"),
        ("openssl enc -aes256 -pass 'pass:pass word' -in f", "pass word"),
        ("openssl req -new -key k.pem --passin pass:hunter2", "hunter2"),
    ],
    "json-secret-field": [
        ("""curl -d '{"token":"abc123"}' https://api""", "abc123"),
        ("""curl -d "{\\"password\\": \\"hunter2\\"}" https://api""", "hunter2"),
        ("""echo '{"client_secret": "s3cr3t", "apiKey": "k3y"}'""", "s3cr3t"),
        ("""echo '{"auths": {"r": {"auth": "dXNlcjpwYXNz"}}}' > config.json""", "dXNlcjpw"),
    ],
    "secret-assignment": [
        ("echo token=abc123; ls", "abc123"),
        ('DB_PASSWORD="correct horse" ./migrate', "correct horse"),
        ("echo 'api_key: k3y-value' >> conf.yml", "k3y-value"),
    ],
    "secret-option": [
        ("psql --password hunter3 -h db", "hunter3"),
        ("tool --api-key 'a b c'", "a b c"),
    ],
    "aws-secret-access-key": [("aws configure set aws_session_token IQoJb3JpZ2lu", "IQoJb3")],
    "secret-env-assignment": [
        ("export DB_PASS=hunter2", "hunter2"),
        ("MYSQL_PWD=hunter2 mysql -u root app", "hunter2"),
        ("env STRIPE_KEY='k 1' ./charge", "k 1"),
        ("true; SMTP_PASS=hunter2 ./send", "hunter2"),
        ("declare -x DEPLOY_KEY=abc", "abc"),
        ("export db_pass=lowerpass333", "lowerpass333"),  # a name in lower case
        ("api_token=abc ./x", "abc"),
    ],
    "env-secret-word": [
        ("GITHUB_TOKEN", ""), ("PGPASSWORD", ""), ("AWS_SECRET_ACCESS_KEY", ""),
        ("SECRET_TOKEN_PATH", ""), ("client_secret", ""), ("GOOGLE_APPLICATION_CREDENTIALS", ""),
    ],
    "env-pass": [("SMTP_PASS", ""), ("PASS", ""), ("redis_pass", "")],
    "env-pwd": [("MYSQL_PWD", ""), ("DB_PWD", "")],
    "env-key": [("STRIPE_KEY", ""), ("KEY", ""), ("deploy_key", "")],
}  # fmt: skip

# Per rule: text it must leave alone (for env rules, variable names).
NEGATIVE: dict[str, list[str]] = {
    "pem-private-key": ["cat id_rsa.pub", "echo -----BEGIN PUBLIC KEY-----", "ssh-add"],
    "aws-access-key-id": ["echo AKIA-not-a-key", "ls AKIAIOSFODNN7EXAMPLEXX"],
    "github-token": ["echo ghp_short", "git checkout ghost_branch"],
    "github-fine-grained-token": ["echo github_pat_short"],
    "gitlab-token": ["git checkout glpat-x", "echo glpat-short"],
    "slack-token": ["echo xoxo kisses", "echo xoxb-1"],
    "slack-webhook": ["curl https://hooks.example.com/services/x"],
    "stripe-key": ["echo pk_live_4eC39HqLyjWDarjtT1zdp7dc", "ls desk_live_x"],
    "vault-token": ["ls hvs.short", "echo chvs.CAESIJ2rjxQq3RWE8AbGfQ1"],
    "vault-token-legacy": ["git log s.py", "cat logs.Oi1lRMJ2XrJkhKjUbJjNXoXz",
                           "cat s.Oi1lRMJ2XrJkhKjUbJjNXoXz.txt", "mv s.a s.b"],
    "npm-token": ["npm_config_registry=https://r npm install", "echo npm_short"],
    "authorization-header": ["grep -ri authorization docs/", "echo Authorization"],
    "url-credentials": ["curl https://example.com:8443/x", "ssh git@github.com"],
    "mysql-password": ["mysql -p", "mysql -u root -p app", "mysql --port=3306 -h db",
                       "mysqldump -P 3306 app", "ls -p /etc/mysql", "mysql -u root -p\"$DB_PASS\"",
                       "mysql app; ls -phunter", "ps -p 1"],
    "curl-user": ["curl -u alice https://x", "grep -u x:y f", "curl --user-agent=a:b https://x",
                  "curl https://x | sort -u a:b", "curl -u alice: https://x"],
    "sshpass": ["sshpass -f ~/.pw ssh host", "sshpass -e ssh -p 2222 host",
                "sshpass -d 3 ssh -p 22 host"],
    "docker-login": ["docker run -p 8080:80 nginx", "docker run --name login -p 80:80 x",
                     "docker login -u ci registry", "docker login -u me --password-stdin ghcr.io",
                     "docker login -p", "docker login; ssh -p 22 h"],
    "openssl-pass": ["openssl rsa -passin env:PW -in k", "openssl rsa -passin file:p.txt -in k",
                     "openssl rsa -passin stdin -in k", "pass show git/token-x"],
    "json-secret-field": ["""echo '{"tokens_used": 5}'""", """echo '{"user": "alice"}'""",
                          """echo '{"token": ""}'"""],
    "secret-assignment": ["grep -r secret .", "echo password reset", "echo key=value",
                          "TOKENIZERS_PARALLELISM=false python x.py", 'PASSWORD="$PW" ./x'],
    "secret-option": ["docker login -u me --password-stdin ghcr.io",
                      "restic --password-file ~/.pw backup /", "tool --token", "x --secret -v",
                      "psql --password \"$PW\""],
    "aws-secret-access-key": ["aws configure get aws_secret_access_key"],
    "secret-env-assignment": ["export HISTCONTROL=ignorespace", "PATH=/x:$PATH ls",
                              "KEYMAP=us loadkeys", "export PWD_FILE=x", "cd $OLDPWD",
                              "make CFLAGS=-O2", "ls --sort=size", "export DB_PASS=$PW",
                              "helm install --set key=value x"],
    "env-secret-word": ["PATH", "TOKENIZERS_PARALLELISM", "HOME", "LS_COLORS"],
    "env-pass": ["PASSTHROUGH", "COMPASS", "BYPASS_CACHE"],
    "env-pwd": ["PWD", "OLDPWD", "PWD_DIR"],
    "env-key": ["KEYMAP", "XKB_DEFAULT_KEYMAP", "MONKEY", "SSH_KEY_PATH"],
}  # fmt: skip

RULE = {r.name: r for r in RULES}


def test_every_rule_has_positive_and_negative_cases():
    names = [r.name for r in RULES]
    assert len(set(names)) == len(names)
    assert set(POSITIVE) == set(NEGATIVE) == set(names)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_rules_example_is_stored_as_the_table_says(rule):
    r = Redactor()
    if rule.kind == "env":
        name, value = rule.example.split("=", 1)
        assert re.search(rule.pattern, name, re.IGNORECASE)
        assert r.env({name: value}) == ({name: MASK}, 1)
        assert f"{name}={MASK}" == rule.redacted
    else:
        assert re.search(rule.pattern, rule.example), "the example is another rule's"
        assert r.text(rule.example) == (rule.redacted, 1)


POSITIVE_CASES = [(name, t, s) for name, cases in POSITIVE.items() for t, s in cases]
NEGATIVE_CASES = [(name, t) for name, cases in NEGATIVE.items() for t in cases]


@pytest.mark.parametrize("name,text,secret", POSITIVE_CASES)
def test_rule_masks(name, text, secret):
    rule = RULE[name]
    r = Redactor()
    if rule.kind == "env":
        assert re.search(rule.pattern, text, re.IGNORECASE)
        assert r.env({text: "hunter2"}) == ({text: MASK}, 1)
        # And in a command's text, typed as an assignment (names in capitals:
        # `--set key=value` is an argument).
        if text.isupper():
            assert r.text(f"export {text}=hunter2") == (f"export {text}={MASK}", 1)
        return
    assert re.search(rule.pattern, text), "the case is another rule's"
    out, n = r.text(text)
    assert secret not in out and n >= 1 and MASK in out


@pytest.mark.parametrize("name,text", NEGATIVE_CASES)
def test_rule_leaves_alone(name, text):
    r = Redactor()
    if RULE[name].kind == "env":
        assert r.env({text: "value"}) == ({text: "value"}, 0)
        assert r.text(f"{text.upper()}=value ./run") == (f"{text.upper()}=value ./run", 0)
    else:
        assert r.text(text) == (text, 0)


def test_a_key_in_a_multi_line_heredoc_keeps_the_lines_around_it():
    command = (
        "install -m 600 /dev/stdin ~/.ssh/id <<'EOF'\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\nEOF\nchmod 600 ~/.ssh/id"
    )
    out, n = Redactor().text(command)
    assert n == 1
    assert out == (
        "install -m 600 /dev/stdin ~/.ssh/id <<'EOF'\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{MASK}\n-----END OPENSSH PRIVATE KEY-----\nEOF\nchmod 600 ~/.ssh/id"
    )


def test_two_secrets_in_one_line_count_twice_and_masks_are_not_masked_again():
    r = Redactor()
    out, n = r.text("mysql -phunter2 app; curl -u a:b2 https://x")
    assert (out, n) == (f"mysql -p{MASK} app; curl -u a:{MASK} https://x", 2)
    assert r.text(out) == (out, 0)


HOSTILE = """
import time
from rewind_daemon.redact import Redactor
n = 200_000
texts = ["token" * (n // 5), "a" * n + "token", "mysql " * (n // 6), "curl -u " * (n // 8),
         "docker login " * (n // 13), '"password' * (n // 9), "--password" + " " * n,
         "-----BEGIN PRIVATE KEY-----" + " " * n + "x", "a." * (n // 2) + "://"]
r = Redactor()
for text in texts:
    t = time.monotonic()
    r.text(text)
    print(f"{time.monotonic() - t:.2f}s {text[:12]!r}")
"""


def test_redaction_takes_time_linear_in_the_text():
    # A record may be megabytes: a pattern that backtracked over the text from
    # every place it could start took minutes on 2 KB of "tokentoken...".
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    times = [float(line.split("s ")[0]) for line in proc.stdout.splitlines()]
    assert len(times) == 9 and max(times) < 5, proc.stdout


# --- long texts (a command's output) -------------------------------------------------

SEPARATORS = [" ", "\n", "\r\n", "'", '"', "=", ": ", "-", "_", "\x1b[1m", "\t", "(", "|",
              ";", "K", "é", "İ", "\\", "\u212a", "ſ", "ı"]  # fmt: skip
# Keys spelt with the letters that match ASCII ones when case is ignored
# (Kelvin's K, long s, dotless i): the rules ignoring case take them.
EXOTIC = ["paſsword: hunter2", "API_\u212aEY=abc123", "--ſecret s3cr3t", '{"credentıal": "c1"}',
          "curl -u a:ſ3 x", "Authorızation: Bearer t0k", "GITHUB_TO\u212aEN=ghx9"]  # fmt: skip


@pytest.mark.parametrize("text", EXOTIC)
def test_a_key_spelt_with_exotic_letters_is_masked_in_a_short_text_too(text):
    # The long-text search took these; a short text's word check did not
    # (`paſsword` lowercased is not `password`), and its secret was kept.
    masked, n = Redactor().text(text)
    assert n == 1 and MASK in masked, masked


LOG_LINES = [
    "[ 45%] Building C object src/auth/CMakeFiles/auth.dir/keys_{n}.c.o",
    "gcc -O2 -Wall -Wextra -Wunused-variable -c src/token_{n}.c -o build/token.o",
    '{{"level":"info","name":"auth","id":{n},"msg":"passed"}}',
    "Get:{n} http://mirror.example/debian bookworm/main amd64 libssl3 [{n} kB]",
    "tests/test_secret_{n}.py ....F..s  [ 45%]",
]


def _long_texts(seed: int, count: int) -> list[str]:
    """Texts of 5-20 kB: log lines, every rule's cases (masked and not), and
    separators that join them in ways no case shows."""
    rng = random.Random(seed)
    cases = [t for c in POSITIVE.values() for t, _ in c if not t.isupper()]
    cases += [t for c in NEGATIVE.values() for t in c] + [t for t, _ in TYPED]
    cases += [r.example for r in RULES] + EXOTIC
    texts = []
    for _ in range(count):
        parts: list[str] = []
        size = rng.randint(5000, 20000)
        while sum(map(len, parts)) < size:
            kind = rng.random()
            if kind < 0.3:
                parts.append(rng.choice(cases))
            elif kind < 0.7:
                parts.append(rng.choice(LOG_LINES).format(n=rng.randint(1, 99999)) + "\r\n")
            else:
                parts.append(rng.choice(SEPARATORS))
        texts.append("".join(parts))
    return texts


def test_a_long_text_is_redacted_as_if_each_rule_searched_all_of_it(monkeypatch):
    # A long text is searched only where the rules' matches can begin: what is
    # masked must be what searching all of it with every rule masks.
    r = Redactor()
    texts = _long_texts(14, 150)
    fast = [r.text(t) for t in texts]
    monkeypatch.setattr(redact, "LONG", 1 << 40)  # every text searched whole
    whole = [r.text(t) for t in texts]
    assert sum(n for _, n in whole) > 300
    for text, got, want in zip(texts, fast, whole):
        assert got == want, text


def test_a_long_text_with_secrets_on_every_line_is_redacted_as_searched_whole(monkeypatch):
    line = "export API_TOKEN=tok{n} && curl -u ci:pw{n} https://ci:pw{n}@x/ ghp_" + "a1B2" * 9
    text = "\n".join(line.format(n=n) for n in range(2000))
    r = Redactor()
    fast = r.text(text)
    monkeypatch.setattr(redact, "LONG", 1 << 40)
    assert fast == r.text(text) and fast[1] == 4 * 2000


def test_a_commands_long_output_is_redacted_fast(monkeypatch):
    # Megabytes of build log with a few secrets: every rule searching all of it
    # where its word was anywhere took 3 times as long or more (most output,
    # with fewer of the rules' words, 10 times or more: bench/output_ingest.py).
    lines = [random.Random(n).choice(LOG_LINES).format(n=n) for n in range(60000)]
    for n in range(0, 60000, 5000):
        lines[n] = f"export GITHUB_TOKEN=ghp_{'Zx9' * 12} password: hunter{n}"
    text = "\r\n".join(lines)
    r = Redactor()
    start = time.process_time()
    out, n = r.text(text)
    took = time.process_time() - start
    assert n == 24 and "ghp_" not in out and "hunter" not in out
    monkeypatch.setattr(redact, "LONG", 1 << 40)  # every rule searches all of it
    start = time.process_time()
    assert r.text(text) == (out, n)
    assert took * 2 < time.process_time() - start


def test_the_words_are_found_by_google_re2_and_without_it_alike(monkeypatch):
    # With google-re2 one pass in C says which parts of a long text hold which
    # words, and each is looked for there only; without it (a machine without
    # the wheel, the remote bundle) each is looked for in all of it. Both must
    # mask what every rule searching all of the text masks, also words across
    # the parts' edges and texts that are not ASCII.
    assert redact._words_set(), "google-re2 is a dependency: the fast path must be tested"
    monkeypatch.setattr(redact, "_find_all", None)  # (the C module's: test_redact_words.py)
    r = Redactor()
    texts = _long_texts(15, 60)
    edge = redact._PART
    lines = [("passw", "db password: hunter{n}"), ("curl", "curl -u ci:pw{n} x"),
             ("://", "git clone https://ci:pw{n}@git.example/r"),
             ("auth", '{{"auth": "au{n}th"}}'), ("token", "--api-token tk{n}z")]  # fmt: skip
    for word, line in lines:
        for cut in range(1, len(word)):  # (the word across the edge of two parts)
            lead = "build ok\n" * (edge // 9)
            lead = lead[: edge - line.index(word) - cut - 1] + "\n"
            texts.append(lead + line.format(n=cut) + "\n" + lead + "ß" + line.format(n=cut))
    with_re2 = [r.text(t) for t in texts]
    monkeypatch.setattr(redact, "_word_set", False)
    without = [r.text(t) for t in texts]
    monkeypatch.setattr(redact, "LONG", 1 << 40)  # every text searched whole
    whole = [r.text(t) for t in texts]
    assert sum(n for _, n in whole) > 200
    for text, a, b, want in zip(texts, with_re2, without, whole):
        assert a == want and b == want, text[-200:]


def test_without_google_re2_rw_redacts_all_the_same():
    # A machine without the C library (and the remote bundle, pure Python) falls
    # back to looking for each word in all of a text.
    code = (
        "import sys; sys.modules['re2'] = None\n"
        "from rewind_daemon import redact\n"
        "text = 'ok\\n' * 40000 + 'password: hunter2 ghp_' + 'a1B2' * 9 + '\\n' + 'ok\\n' * 40000\n"
        "out, n = redact.Redactor().text(text)\n"
        "print(redact._words_set(), n, 'hunter2' in out, 'ghp_' in out)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "2", "False", "False"]


def test_env_values_by_name_and_by_content():
    env, n = Redactor().env(
        {"GITHUB_TOKEN": "abc", "PATH": "/bin", "DATABASE_URL": "postgres://u:pw@db/x", "E": ""}
    )
    assert env == {
        "GITHUB_TOKEN": MASK,
        "PATH": "/bin",
        "DATABASE_URL": f"postgres://u:{MASK}@db/x",
        "E": "",
    }
    assert n == 2


def test_the_readme_table_is_the_rules_table():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = markdown_table()
    assert table in readme, (
        "README.md's redaction table differs from rewind_daemon/redact.py RULES; paste "
        "the output of: python -c 'from rewind_daemon.redact import markdown_table as t; "
        'print(t(), end="")\''
    )
    assert len(table.splitlines()) == len(RULES) + 2
    assert TEXT_RULES and ENV_RULES


# --- the config's additions ------------------------------------------------------


def _config(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(path)


def test_config_patterns_and_env_names_extend_the_rules(tmp_path):
    cfg = _config(
        tmp_path,
        "[redact]\npatterns = ['ACME-(?P<s>\\d{6})', '\\bhunter\\d\\b']\n"
        "env_names = ['ACME_*_PIN', 'LICENCE']\n",
    )
    r = cfg.redactor()
    assert r.text("deploy ACME-123456 hunter7") == (f"deploy ACME-{MASK} {MASK}", 2)
    env, n = r.env({"acme_prod_pin": "1234", "LICENCE": "x", "ACME_PIN_FILE": "/p", "P": "1"})
    assert env == {"acme_prod_pin": MASK, "LICENCE": MASK, "ACME_PIN_FILE": "/p", "P": "1"}
    assert n == 2
    # Names the config adds need no built-in word to be found in a command.
    assert r.text("export ACME_EU_PIN=1234") == (f"export ACME_EU_PIN={MASK}", 1)
    assert r.text("LICENCES=3 ./x") == ("LICENCES=3 ./x", 0)


def test_the_older_top_level_redact_list_still_works(tmp_path):
    cfg = _config(tmp_path, "redact = ['ACME-(?P<s>\\d{6})']\n")
    assert cfg.redactor().text("ACME-123456") == (f"ACME-{MASK}", 1)


def test_the_default_config_text_loads_and_redacts_only_the_built_ins(tmp_path):
    cfg = _config(tmp_path, config.DEFAULT_TEXT)
    assert cfg.redact == [] and cfg.redact_env_names == []


@pytest.mark.parametrize(
    "text,message",
    [
        ("[redact]\npatterns = ['(unclosed']\n",
         "config: invalid regex in redact.patterns: '(unclosed': missing ), "
         "unterminated subpattern at position 0"),
        ("[redact]\npatterns = ['x*']\n",
         "config: redact.patterns: 'x*' matches the empty string, so it would mask "
         "between every two characters"),
        ("[redact]\nenv_names = ['DB PASS']\n",
         "config: redact.env_names: 'DB PASS' is not a variable name glob "
         "(letters, digits, _, and the wildcards * and ?)"),
        ("[redact]\nenv_names = 'X'\n", "'env_names' must be a list of strings"),
        ("redact = 'x'\n", "'redact' must be a list of strings"),
        ("[redact]\nenv_name = ['X']\n", "[redact] has no key 'env_name' (patterns, env_names)"),
    ],
)  # fmt: skip
def test_bad_redact_config_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(RwError) as e:
        _config(tmp_path, text)
    assert message in str(e.value) and e.value.exit_code == 2


def test_a_bad_redact_regex_stops_the_cli_with_one_line_and_exit_2(rw_home):
    write_config(rw_home, "[redact]\npatterns = ['(unclosed']\n")
    for args in (("config", "show"), ("daemon", "run")):
        proc = rw(*args, check=False)
        assert proc.returncode == 2, proc
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "invalid regex in redact.patterns: '(unclosed'" in proc.stderr


# --- real shells ---------------------------------------------------------------------

TYPED = [
    ("echo mysql -u root -pHunter2mysql app", "Hunter2mysql"),
    ("echo curl -u alice:Hunter2curl https://example.invalid", "Hunter2curl"),
    ("echo sshpass -p Hunter2ssh ssh host", "Hunter2ssh"),
    ("echo docker login -u ci -p Hunter2docker registry", "Hunter2docker"),
    ("echo openssl rsa -passin pass:Hunter2openssl", "Hunter2openssl"),
    ("""echo '{"password": "Hunter2json"}' > /dev/null""", "Hunter2json"),
    ("echo xoxb-1234567890-Hunter2slack", "Hunter2slack"),
    ("export DB_PASS=Hunter2dbpass", "Hunter2dbpass"),
    ("export STRIPE_KEY=Hunter2stripe", "Hunter2stripe"),
    ("export ACME_EU_PIN=Hunter2acme", "Hunter2acme"),
    ("MYSQL_PWD=Hunter2pwd true", "Hunter2pwd"),
    ("cat > key.pem <<'EOF'\n-----BEGIN RSA PRIVATE KEY-----\nHunter2pem\n"
     "-----END RSA PRIVATE KEY-----\nEOF", "Hunter2pem"),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_secrets_typed_in_a_real_shell_never_reach_the_store(rw_home, shells, tmp_path, kind):
    write_config(rw_home, "[redact]\nenv_names = ['ACME_*_PIN']\n")
    rw("daemon", "start")
    sh = shells(kind)
    sh.run(f"cd {tmp_path}")
    for command, _ in TYPED:
        sh.run(command)
    sh.run("echo done")
    sid = sh.session_id()
    steps = steps_of(sid)
    assert len(steps) == len(TYPED) + 2
    assert (tmp_path / "key.pem").read_text() == (
        "-----BEGIN RSA PRIVATE KEY-----\nHunter2pem\n-----END RSA PRIVATE KEY-----\n"
    )  # what ran is what was typed; only what is stored is masked
    shown = rw("log", sid).stdout + rw("log", sid, "--json").stdout
    shown += "".join(rw("show", sid, str(n)).stdout for n in range(1, len(steps) + 1))
    last = rw_json("show", sid, str(len(steps)))
    db = [rw_home / "data" / n for n in ("rw.db", "rw.db-wal")]
    stored = (
        shown + repr(last) + "".join(p.read_bytes().decode("latin-1") for p in db if p.exists())
    )
    for _, secret in TYPED:
        assert secret not in stored, secret
    assert steps[-2]["command"].startswith("cat > key.pem <<'EOF'\n-----BEGIN RSA PRIVATE KEY")
    assert MASK in steps[-2]["command"]
    assert all(MASK in s["command"] for s in steps[1:-1])
    env = last["env"]
    assert env["DB_PASS"] == env["STRIPE_KEY"] == env["ACME_EU_PIN"] == MASK
    assert env["PWD"] == str(tmp_path)
