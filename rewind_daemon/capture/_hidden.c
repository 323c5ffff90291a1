/* The lines of a step's output that its text does not show as written
 * (termtext.hidden_spans): one pass over the bytes, in C.
 *
 * A line (the bytes between two LFs) is taken when it holds a CR not before
 * LF, a backspace, a part of a string escape (ESC ] P X ^ _ up to BEL, ESC \,
 * the next ESC or the end), a part written on the alternate screen or a switch
 * to or from it (CSI ? ... 1049/1047/47 h or l), or a join: a word byte, then
 * escape sequences or control bytes, then a word byte (word: ASCII letters,
 * digits, _, and every byte of a character that is not ASCII). Each taken line
 * comes with `context` lines before and after it; the answer is a list of
 * (start, end) byte offsets of the runs of lines taken, in order, each ending
 * before its LF. termtext.py holds the same in Python (the reference the tests
 * compare this with).
 *
 * Beside it, for outputs.py, what Python would do with a copy or a loop: whether
 * output is plain (termtext.is_plain, no copy of it), whether it may switch to
 * the alternate screen, and the line ends of the bytes and of their text. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static int is_word(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       c == '_' || c >= 0x80;
}

/* A byte a rule's lookaround may stand on: a word's, or . - / + | ; & ( */
static int is_joinable(unsigned char c)
{
	return is_word(c) || c == '.' || c == '-' || c == '/' || c == '+' || c == '|' || c == ';' ||
	       c == '&' || c == '(';
}

/* Controls a rule's \s takes for a space and the text removes: VT, FF, FS..US. */
static int is_space_control(unsigned char c)
{
	return c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1f);
}

static int is_control(unsigned char c)
{
	/* What the text removes: not TAB, LF, CR (handled) nor BS (taken alone). */
	return c <= 0x07 || c == 0x0b || c == 0x0c || (c >= 0x0e && c <= 0x1f) || c == 0x7f;
}

/* The end of the escape sequence at b[i] (an ESC) that is not a string, and
 * whether it switches the alternate screen (1 on, 0 off), ends in a letter or
 * digit before a word's (2: ESC ( B before `word`, which the text shows as
 * `word` and the bytes as `Bword`), or neither (-1). */
static Py_ssize_t escape_end(const unsigned char *b, Py_ssize_t n, Py_ssize_t i, int *alt)
{
	Py_ssize_t j = i + 1;
	*alt = -1;
	if (j < n && b[j] == '[') {
		Py_ssize_t p = ++j;
		while (j < n && b[j] >= 0x30 && b[j] <= 0x3f)
			j++;
		Py_ssize_t pe = j;
		while (j < n && b[j] >= 0x20 && b[j] <= 0x2f)
			j++;
		if (j < n && b[j] >= 0x40 && b[j] <= 0x7e) {
			unsigned char final = b[j++];
			if ((final == 'h' || final == 'l') && pe > p && b[p] == '?') {
				/* ?1049, ?1047 or ?47 among the ;-separated parameters */
				Py_ssize_t k = p + 1;
				while (k <= pe) {
					Py_ssize_t e = k;
					while (e < pe && b[e] != ';')
						e++;
					Py_ssize_t len = e - k;
					if ((len == 4 && (memcmp(b + k, "1049", 4) == 0 ||
							  memcmp(b + k, "1047", 4) == 0)) ||
					    (len == 2 && memcmp(b + k, "47", 2) == 0))
						*alt = final == 'h';
					k = e + 1;
				}
			}
		}
		return j;
	}
	while (j < n && b[j] >= 0x20 && b[j] <= 0x2f)
		j++;
	if (j < n && b[j] >= 0x30 && b[j] <= 0x7e) {
		/* (its final byte, a letter or digit the text drops, joins what follows) */
		if (is_word(b[j]) && j + 1 < n && is_word(b[j + 1]))
			*alt = 2;
		j++;
	}
	return j;
}

static int is_string_start(unsigned char c)
{
	return c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_';
}

typedef struct {
	Py_ssize_t *starts; /* line starts, one per line */
	char *taken;
	Py_ssize_t lines, cap;
} Lines;

static int add_line(Lines *L, Py_ssize_t start)
{
	if (L->lines == L->cap) {
		Py_ssize_t cap = L->cap ? L->cap * 2 : 1024;
		Py_ssize_t *s = PyMem_RawRealloc(L->starts, cap * sizeof(Py_ssize_t));
		if (s == NULL)
			return -1;
		L->starts = s;
		char *t = PyMem_RawRealloc(L->taken, cap);
		if (t == NULL)
			return -1;
		L->taken = t;
		L->cap = cap;
	}
	L->starts[L->lines] = start;
	L->taken[L->lines] = 0;
	L->lines++;
	return 0;
}

/* Bytes that end a run of ordinary ones: LF, CR, BS, ESC and the controls. */
static unsigned char stop[256];

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of the 8 bytes of w is below 0x20 or is 0x7f (exact: each byte's
 * high bit is set in the answer only for such a byte, as for `haszero`). */
static uint64_t may_stop(uint64_t w)
{
	uint64_t below = (w - ONES * 0x20) & ~w & HIGHS;
	uint64_t del = w ^ (ONES * 0x7f);
	return below | ((del - ONES) & ~del & HIGHS);
}

/* The first byte from b[i] that `stop` holds (or n), eight bytes at a time where
 * none may be (a stop byte is below 0x20 or DEL: a TAB alone is read again). */
static Py_ssize_t skip_ordinary(const unsigned char *b, Py_ssize_t i, Py_ssize_t n)
{
	for (;;) {
		while (i + 8 <= n) {
			uint64_t w;
			memcpy(&w, b + i, 8);
			if (may_stop(w))
				break;
			i += 8;
		}
		Py_ssize_t end = i + 8 < n ? i + 8 : n;
		while (i < end && !stop[b[i]])
			i++;
		if (i < end || i >= n)
			return i;
	}
}

/* Mark the lines; -1 when out of memory. */
static int scan(const unsigned char *b, Py_ssize_t n, Lines *L)
{
	int alt = 0, in_string = 0;
	if (add_line(L, 0) < 0)
		return -1;
	Py_ssize_t i = 0;
	Py_ssize_t plain_from = 0; /* b[plain_from..i) are ordinary bytes */
	while (i < n) {
		if (!in_string) {
			if (alt)
				L->taken[L->lines - 1] = 1;
			i = skip_ordinary(b, i, n);
			if (i >= n)
				break;
		}
		unsigned char c = b[i];
		Py_ssize_t line = L->lines - 1;
		if (alt || in_string)
			L->taken[line] = 1;
		if (in_string) {
			if (c == 0x07) {
				in_string = 0;
				i++;
			} else if (c == 0x1b) {
				in_string = 0;
				if (i + 1 < n && b[i + 1] == '\\')
					i += 2;
				/* else: cut off by another escape, which is read next */
			} else {
				if (c == '\n' && add_line(L, i + 1) < 0)
					return -1;
				i++;
			}
			plain_from = i;
			continue;
		}
		if (c == '\n') {
			if (add_line(L, i + 1) < 0)
				return -1;
			i++;
		} else if (c == '\r') {
			if (i + 1 < n && b[i + 1] != '\n')
				L->taken[line] = 1;
			i++;
		} else if (c == 0x08) {
			L->taken[line] = 1;
			i++;
		} else {
			/* A run of escapes and controls: a join when words are on both sides. */
			int before = i > plain_from && is_joinable(b[i - 1]);
			while (i < n && (b[i] == 0x1b || is_control(b[i]))) {
				if (b[i] == 0x1b && i + 1 < n && is_string_start(b[i + 1])) {
					L->taken[L->lines - 1] = 1;
					in_string = 1;
					i += 2;
					break;
				}
				if (b[i] == 0x1b) {
					int sw;
					i = escape_end(b, n, i, &sw);
					if (sw >= 0)
						L->taken[L->lines - 1] = 1;
					if (sw == 0 || sw == 1)
						alt = sw;
				} else {
					if (is_space_control(b[i]))
						L->taken[L->lines - 1] = 1;
					i++;
				}
			}
			if (!in_string && before && i < n && is_joinable(b[i]))
				L->taken[L->lines - 1] = 1;
		}
		plain_from = i;
	}
	return 0;
}

static PyObject *spans(PyObject *self, PyObject *args)
{
	Py_buffer view;
	Py_ssize_t context;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*n", &view, &context))
		return NULL;
	const unsigned char *b = view.buf;
	Py_ssize_t n = view.len;
	Lines L = {NULL, NULL, 0, 0};
	int failed;
	Py_BEGIN_ALLOW_THREADS
	failed = scan(b, n, &L);
	Py_END_ALLOW_THREADS
	PyObject *out = NULL;
	if (failed) {
		PyErr_NoMemory();
		goto done;
	}
	out = PyList_New(0);
	if (out == NULL)
		goto done;
	Py_ssize_t end = 0; /* lines before this one are in an answer already */
	for (Py_ssize_t k = 0; k < L.lines; k++) {
		if (!L.taken[k])
			continue;
		Py_ssize_t first = k - context > end ? k - context : end;
		Py_ssize_t last = k + context + 1 < L.lines ? k + context + 1 : L.lines; /* exclusive */
		if (first >= last)
			continue;
		Py_ssize_t a = L.starts[first];
		Py_ssize_t z = last < L.lines ? L.starts[last] - 1 : n;
		Py_ssize_t size = PyList_GET_SIZE(out);
		PyObject *prev = size ? PyList_GET_ITEM(out, size - 1) : NULL;
		if (prev != NULL && first == end && end > 0) {
			/* (joined with the run before: one span) */
			PyObject *joined = Py_BuildValue("(nn)", PyLong_AsSsize_t(PyTuple_GET_ITEM(prev, 0)), z);
			if (joined == NULL || PyList_SetItem(out, size - 1, joined) < 0) {
				Py_CLEAR(out);
				goto done;
			}
		} else {
			PyObject *span = Py_BuildValue("(nn)", a, z);
			if (span == NULL || PyList_Append(out, span) < 0) {
				Py_XDECREF(span);
				Py_CLEAR(out);
				goto done;
			}
			Py_DECREF(span);
		}
		end = last;
	}
done:
	PyMem_RawFree(L.starts);
	PyMem_RawFree(L.taken);
	PyBuffer_Release(&view);
	return out;
}

static PyObject *line_ends(PyObject *self, PyObject *args)
{
	Py_buffer view;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*", &view))
		return NULL;
	const char *b = view.buf, *p = b, *end = b + view.len;
	Py_ssize_t count = 0;
	while ((p = memchr(p, '\n', end - p)) != NULL) {
		count++;
		p++;
	}
	PyObject *out = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(long long));
	if (out != NULL) {
		long long *at = (long long *)PyBytes_AS_STRING(out);
		Py_ssize_t k = 0;
		for (p = b; (p = memchr(p, '\n', end - p)) != NULL; p++)
			at[k++] = (long long)(p - b);
	}
	PyBuffer_Release(&view);
	return out;
}

/* Bytes that make a text differ from the bytes beyond line ends (termtext.is_plain):
 * 1, the controls but TAB, LF and CR (escapes, backspaces among them) and DEL;
 * 2, a CR, which is plain only before an LF. */
static unsigned char not_plain[256];

static int plain_scan(const unsigned char *b, Py_ssize_t n)
{
	Py_ssize_t i = 0;
	while (i < n) {
		if (i + 8 <= n) {
			uint64_t w;
			memcpy(&w, b + i, 8);
			if (!may_stop(w)) {
				i += 8;
				continue;
			}
		}
		Py_ssize_t end = i + 8 < n ? i + 8 : n;
		for (; i < end; i++) {
			unsigned char t = not_plain[b[i]];
			if (t == 1 || (t == 2 && (i + 1 >= n || b[i + 1] != '\n')))
				return 0;
		}
	}
	return 1;
}

static PyObject *plain(PyObject *self, PyObject *args)
{
	Py_buffer view;
	int answer;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*", &view))
		return NULL;
	if (view.len >= 1 << 16) {
		Py_BEGIN_ALLOW_THREADS
		answer = plain_scan(view.buf, view.len);
		Py_END_ALLOW_THREADS
	} else {
		answer = plain_scan(view.buf, view.len);
	}
	PyBuffer_Release(&view);
	return PyBool_FromLong(answer);
}

/* The offset (in characters) of every LF of a str, as native 64-bit integers. */
static PyObject *text_line_ends(PyObject *self, PyObject *args)
{
	PyObject *text;
	(void)self;
	if (!PyArg_ParseTuple(args, "U", &text))
		return NULL;
	int kind = PyUnicode_KIND(text);
	const void *data = PyUnicode_DATA(text);
	Py_ssize_t n = PyUnicode_GET_LENGTH(text), count = 0;
	for (int pass = 0; pass < 2; pass++) {
		long long *at = NULL;
		PyObject *out = NULL;
		if (pass == 1) {
			out = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(long long));
			if (out == NULL)
				return NULL;
			at = (long long *)PyBytes_AS_STRING(out);
		}
		Py_ssize_t k = 0;
		if (kind == PyUnicode_1BYTE_KIND) {
			const char *b = data, *p = b, *end = b + n;
			while ((p = memchr(p, '\n', end - p)) != NULL) {
				if (at)
					at[k] = (long long)(p - b);
				k++;
				p++;
			}
		} else if (kind == PyUnicode_2BYTE_KIND) {
			const Py_UCS2 *u = data;
			for (Py_ssize_t i = 0; i < n; i++)
				if (u[i] == '\n') {
					if (at)
						at[k] = i;
					k++;
				}
		} else {
			const Py_UCS4 *u = data;
			for (Py_ssize_t i = 0; i < n; i++)
				if (u[i] == '\n') {
					if (at)
						at[k] = i;
					k++;
				}
		}
		if (pass == 1)
			return out;
		count = k;
	}
	return NULL; /* (not reached) */
}

/* Whether the bytes may switch to or from the alternate screen as the text reads
 * them (termtext.may_use_alternate_screen: _MAY_ALT over the bytes, SUBs removed
 * first): ESC [ ? then parameter bytes holding 1049, 1047 or 47, intermediate
 * bytes, and h or l. Each `?` is found by memchr (rare in output). */
static int switch_scan(const unsigned char *b, Py_ssize_t n)
{
	const unsigned char *p = b, *end = b + n;
	while ((p = memchr(p, '?', end - p)) != NULL) {
		Py_ssize_t i = p - b, j = i - 1, k;
		p++;
		while (j >= 0 && b[j] == 0x1a)
			j--;
		if (j < 0 || b[j] != '[')
			continue;
		j--;
		while (j >= 0 && b[j] == 0x1a)
			j--;
		if (j < 0 || b[j] != 0x1b)
			continue;
		unsigned char w[4] = {0, 0, 0, 0}; /* the last four parameter bytes */
		int found = 0;
		for (k = i + 1; k < n; k++) {
			unsigned char c = b[k];
			if (c == 0x1a)
				continue;
			if (c < 0x30 || c > 0x3f)
				break;
			w[0] = w[1], w[1] = w[2], w[2] = w[3], w[3] = c;
			/* (1049, or 47: 1047 holds it) */
			if ((w[2] == '4' && w[3] == '7') ||
			    (w[0] == '1' && w[1] == '0' && w[2] == '4' && w[3] == '9'))
				found = 1;
		}
		if (!found)
			continue;
		while (k < n && (b[k] == 0x1a || (b[k] >= 0x20 && b[k] <= 0x2f)))
			k++;
		if (k < n && (b[k] == 'h' || b[k] == 'l'))
			return 1;
	}
	return 0;
}

static PyObject *may_switch_screen(PyObject *self, PyObject *args)
{
	Py_buffer view;
	int answer;
	(void)self;
	if (!PyArg_ParseTuple(args, "y*", &view))
		return NULL;
	answer = switch_scan(view.buf, view.len);
	PyBuffer_Release(&view);
	return PyBool_FromLong(answer);
}

static PyMethodDef methods[] = {
	{"may_switch_screen", may_switch_screen, METH_VARARGS,
	 "may_switch_screen(raw) -> bool: whether raw may switch to or from the alternate screen "
	 "(see termtext.may_use_alternate_screen)."},
	{"plain", plain, METH_VARARGS,
	 "plain(raw) -> bool: no control but TAB, LF and CR in raw, no DEL, and every CR before an LF "
	 "(see termtext.is_plain)."},
	{"text_line_ends", text_line_ends, METH_VARARGS,
	 "text_line_ends(text) -> bytes: the offset of every LF of the str text, as native 64-bit "
	 "integers."},
	{"line_ends", line_ends, METH_VARARGS,
	 "line_ends(raw) -> bytes: the offset of every LF of raw, as native 64-bit integers."},
	{"spans", spans, METH_VARARGS,
	 "spans(raw, context) -> [(start, end)]: the runs of lines of raw its text does not show "
	 "as written, with context lines around each (see termtext.hidden_spans)."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_hidden", "The lines of output its text does not show (termtext.py).",
	-1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hidden(void)
{
	for (int c = 0; c < 256; c++)
		stop[c] = c == '\n' || c == '\r' || c == 0x08 || c == 0x1b || is_control((unsigned char)c);
	for (int c = 0; c < 256; c++)
		not_plain[c] = c == '\r' ? 2 : (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f;
	return PyModule_Create(&module);
}
