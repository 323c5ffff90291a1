/* The text of recorded output, and the words redaction looks for, in C.
 *
 * text(raw, program) and text_parts(raw, program) are capture/termtext.py's
 * text_of and text_parts (its `_parts` is the reference, escape by escape):
 * one pass over the bytes, decoding UTF-8 as Python's "replace" handler does,
 * escapes parsed as termtext's _ESCAPE regex does (a SUB byte is removed
 * before anything else: it is skipped wherever it is), and each line that
 * holds a CR, a backspace or an erase made a terminal's cells when it ends.
 * scan_words(text, words, chars, run) is redact._Scan's one pass: the text
 * lowercased as bytes, all its words found at once and its runs of token chars.
 * The scans run without the GIL: the daemon may use threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SUB 0x1a /* stands for `ESC [ K` in a line (a SUB in the output is removed) */

/* A growing byte buffer; `bad` once memory ran out (then nothing more is put). */
typedef struct {
    unsigned char *p;
    size_t n, cap;
    int bad;
} Buf;

static int grow(Buf *b, size_t more) {
    if (b->bad)
        return -1;
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->bad = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void put(Buf *b, const unsigned char *s, size_t k) {
    if (k > 0 && grow(b, k) == 0) {
        memcpy(b->p + b->n, s, k);
        b->n += k;
    }
}

static inline void put1(Buf *b, unsigned char c) {
    if (b->n < b->cap || grow(b, 1) == 0)
        b->p[b->n++] = c;
}

static const unsigned char REPLACEMENT[3] = {0xef, 0xbf, 0xbd}; /* U+FFFD */

/* Control characters that draw nothing (termtext's _CONTROLS): all below 0x20
 * but tab, LF, CR, BS (handled) and ESC (escapes), and DEL. SUB is removed. */
static inline int is_control(unsigned char c) {
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\b' && c != 0x1b) || c == 0x7f;
}

/* The length of the character of UTF-8 at r[i] (a byte >= 0x80), and whether
 * it is one: if not, what Python's decoder replaces with one U+FFFD (the
 * longest start of a valid sequence, at least one byte). */
static size_t utf8_at(const unsigned char *r, size_t i, size_t n, int *valid) {
    unsigned c = r[i];
    unsigned lo = 0x80, hi = 0xbf;
    size_t need;
    *valid = 0;
    if (c < 0xc2 || c > 0xf4)
        return 1;
    if (c < 0xe0) {
        need = 1;
    } else if (c < 0xf0) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    }
    if (i + 1 >= n || r[i + 1] < lo || r[i + 1] > hi)
        return 1;
    for (size_t k = 2; k <= need; k++)
        if (i + k >= n || (r[i + k] & 0xc0) != 0x80)
            return k;
    *valid = 1;
    return need + 1;
}

/* Pieces of hidden text, each ended by a line end when the next begins. */
typedef struct {
    Buf *b;
    int open;
} Pieces;

static inline void piece_end(Pieces *p) {
    if (p->open) {
        put1(p->b, '\n');
        p->open = 0;
    }
}

static inline void piece_ascii(Pieces *p, unsigned char c) {
    if (c == '\n' || c == '\r' || c == '\b')
        piece_end(p);
    else if (!is_control(c) && c != SUB) {
        put1(p->b, c);
        p->open = 1;
    }
}

static inline void piece_char(Pieces *p, const unsigned char *s, size_t k) {
    put(p->b, s, k);
    p->open = 1;
}

typedef struct {
    const unsigned char *raw;
    size_t n;
    const unsigned char *program;
    size_t program_n;
    int hidden; /* whether hidden is wanted */
    Buf out;    /* the text */
    size_t line;    /* where the current line of the text begins */
    size_t crs;     /* its CRs (not those before LF) */
    int special;    /* it holds a backspace or an erase */
    Buf lost;       /* hidden: the overwritten pieces of lines */
    Buf aside;      /* hidden: strings' payloads, the alternate screen when left */
    Buf drawn;      /* the alternate screen's pieces while it is on */
    Pieces payload; /* (into aside) */
    Pieces screen;  /* (into drawn) */
    int alt;
    /* Scratch for a line made cells (grown as needed). */
    uint32_t *cells, *owner, *starts, *ends;
    unsigned char *gone;
    size_t cells_cap, pieces_cap;
    int bad;
} State;

static int scratch(State *st, size_t chars, size_t pieces) {
    if (chars > st->cells_cap) {
        uint32_t *c = realloc(st->cells, chars * sizeof *c);
        if (c != NULL)
            st->cells = c;
        uint32_t *o = realloc(st->owner, chars * sizeof *o);
        if (o != NULL)
            st->owner = o;
        if (c == NULL || o == NULL)
            return -1;
        st->cells_cap = chars;
    }
    if (pieces > st->pieces_cap) {
        uint32_t *s = realloc(st->starts, pieces * sizeof *s);
        if (s != NULL)
            st->starts = s;
        uint32_t *e = realloc(st->ends, pieces * sizeof *e);
        if (e != NULL)
            st->ends = e;
        unsigned char *g = realloc(st->gone, pieces);
        if (g != NULL)
            st->gone = g;
        if (s == NULL || e == NULL || g == NULL)
            return -1;
        st->pieces_cap = pieces;
    }
    return 0;
}

/* The length of the character at s[k] of the text (valid UTF-8, but for the
 * surrogates a program's name may hold, written as UTF-8 too), and its code. */
static inline size_t char_at(const unsigned char *s, size_t k, uint32_t *cp) {
    unsigned c = s[k];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xe0) {
        *cp = ((c & 0x1f) << 6) | (s[k + 1] & 0x3f);
        return 2;
    }
    if (c < 0xf0) {
        *cp = ((c & 0x0f) << 12) | ((s[k + 1] & 0x3f) << 6) | (s[k + 2] & 0x3f);
        return 3;
    }
    *cp = ((c & 0x07) << 18) | ((s[k + 1] & 0x3f) << 12) | ((s[k + 2] & 0x3f) << 6) |
          (s[k + 3] & 0x3f);
    return 4;
}

static inline size_t encode(uint32_t cp, unsigned char *d) {
    if (cp < 0x80) {
        d[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (unsigned char)(0xc0 | (cp >> 6));
        d[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (unsigned char)(0xe0 | (cp >> 12));
        d[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (unsigned char)(0xf0 | (cp >> 18));
    d[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The current line as a terminal leaves it after its CRs, backspaces and
 * erases (termtext._overwrite_parts): its cells, a character each, in its
 * place; each piece of which a cell was overwritten or erased to `lost`. */
static void overwrite(State *st) {
    unsigned char *s = st->out.p + st->line;
    size_t len = st->out.n - st->line, chars = 0, pieces = 1;
    for (size_t k = 0; k < len; k++) {
        unsigned char c = s[k];
        if ((c & 0xc0) != 0x80)
            chars++;
        if (c == '\r' || c == '\b' || c == SUB)
            pieces++;
    }
    if (scratch(st, chars + 1, pieces) < 0) {
        st->bad = 1;
        return;
    }
    uint32_t *cells = st->cells, *owner = st->owner, *starts = st->starts, *ends = st->ends;
    unsigned char *gone = st->gone;
    size_t ncells = 0, col = 0, npieces = 0;
    int open = 0;
    for (size_t k = 0; k < len;) {
        unsigned char c = s[k];
        if (c == '\r' || c == '\b' || c == SUB) {
            open = 0;
            if (c == '\r') {
                col = 0;
            } else if (c == '\b') {
                if (col > 0)
                    col--;
            } else {
                for (size_t q = col; q < ncells; q++)
                    gone[owner[q]] = 1;
                if (col < ncells)
                    ncells = col;
            }
            k++;
            continue;
        }
        uint32_t cp;
        size_t l = char_at(s, k, &cp);
        if (!open) {
            starts[npieces] = (uint32_t)k;
            gone[npieces] = 0;
            npieces++;
            open = 1;
        }
        ends[npieces - 1] = (uint32_t)(k + l);
        if (col < ncells)
            gone[owner[col]] = 1;
        cells[col] = cp;
        owner[col] = (uint32_t)(npieces - 1);
        col++;
        if (col > ncells)
            ncells = col;
        k += l;
    }
    if (st->hidden) {
        for (size_t p = 0; p < npieces; p++) {
            if (gone[p]) {
                put(&st->lost, s + starts[p], ends[p] - starts[p]);
                put1(&st->lost, '\n');
            }
        }
    }
    /* The cells are some of the characters written: they fit where they were. */
    size_t w = 0;
    for (size_t q = 0; q < ncells; q++)
        w += encode(cells[q], s + w);
    st->out.n = st->line + w;
}

static void end_line(State *st) {
    if (st->crs || st->special)
        overwrite(st);
    put1(&st->out, '\n');
    st->line = st->out.n;
    st->crs = 0;
    st->special = 0;
}

/* One ASCII character of the text (not ESC). */
static inline void text_ascii(State *st, unsigned char c) {
    Buf *out = &st->out;
    if (c == '\n') {
        if (out->n > st->line && out->p[out->n - 1] == '\r') { /* CR LF */
            out->n--;
            st->crs--;
        }
        end_line(st);
    } else if (c == '\r') {
        put1(out, c);
        st->crs++;
    } else if (c == '\b') {
        put1(out, c);
        st->special = 1;
    } else if (!is_control(c) && c != SUB) {
        put1(out, c);
    }
}

static void alt_on(State *st) {
    /* The note, on a line of its own (the program's name as text is: its
     * controls removed, as any text's). */
    if (st->out.n > st->line)
        text_ascii(st, '\n');
    static const char head[] = "[full-screen: ";
    for (const char *h = head; *h; h++)
        put1(&st->out, (unsigned char)*h);
    for (size_t k = 0; k < st->program_n; k++) {
        unsigned char c = st->program[k];
        if (c < 0x80)
            text_ascii(st, c);
        else
            put1(&st->out, c);
    }
    text_ascii(st, ']');
    text_ascii(st, '\n');
    st->alt = 1;
}

static void alt_off(State *st) {
    piece_end(&st->screen);
    put(&st->aside, st->drawn.p, st->drawn.n);
    st->drawn.n = 0;
    st->alt = 0;
}

static inline size_t skip_sub(const unsigned char *r, size_t j, size_t n) {
    while (j < n && r[j] == SUB)
        j++;
    return j;
}

/* Whether a `?` mode is the alternate screen's: xterm's 1049, 1047 or 47. */
static inline int alt_mode(const char *field, size_t len) {
    return (len == 4 && (!memcmp(field, "1049", 4) || !memcmp(field, "1047", 4))) ||
           (len == 2 && !memcmp(field, "47", 2));
}

/* The escape at raw[i] (ESC): what it does; where what follows it begins. */
static size_t escape(State *st, size_t i) {
    const unsigned char *r = st->raw;
    size_t n = st->n, j = skip_sub(r, i + 1, n);
    if (j >= n)
        return n;
    unsigned char c = r[j];
    if (c == '[') {
        /* CSI: parameters 0-?, intermediates space-/, a final @-~ (if any). */
        size_t params = 0, inter = 0;
        unsigned char first = 0;
        char field[5];
        size_t flen = 0;
        int mode = 0; /* one of the `?` fields is 1049, 1047 or 47 */
        j++;
        for (;;) {
            j = skip_sub(r, j, n);
            if (j >= n || r[j] < 0x30 || r[j] > 0x3f)
                break;
            c = r[j++];
            if (params++ == 0) {
                first = c;
                continue;
            }
            if (first != '?')
                continue;
            if (c == ';') {
                mode |= alt_mode(field, flen);
                flen = 0;
            } else if (flen < sizeof field) {
                field[flen++] = (char)c;
            }
        }
        if (first == '?')
            mode |= alt_mode(field, flen);
        for (;;) {
            j = skip_sub(r, j, n);
            if (j >= n || r[j] < 0x20 || r[j] > 0x2f)
                break;
            j++;
            inter++;
        }
        if (j >= n || r[j] < 0x40 || r[j] > 0x7e)
            return j; /* cut off: no final */
        c = r[j++];
        if ((c == 'h' || c == 'l') && mode) {
            if (c == 'h' && !st->alt)
                alt_on(st);
            else if (c == 'l' && st->alt)
                alt_off(st);
        } else if (c == 'K' && inter == 0 && (params == 0 || (params == 1 && first == '0'))) {
            if (st->alt) {
                piece_end(&st->screen);
            } else {
                put1(&st->out, SUB);
                st->special = 1;
            }
        }
        return j;
    }
    if (c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_') {
        /* A string, to BEL or ST, or cut off by another ESC, or to the end. */
        Pieces *p = &st->payload;
        j++;
        while (j < n) {
            c = r[j];
            if (c == 0x07) {
                piece_end(p);
                return j + 1;
            }
            if (c == 0x1b) {
                size_t k = skip_sub(r, j + 1, n);
                piece_end(p);
                return k < n && r[k] == '\\' ? k + 1 : j;
            }
            if (c < 0x80) {
                if (st->hidden)
                    piece_ascii(p, c);
                j++;
            } else {
                int valid;
                size_t l = utf8_at(r, j, n, &valid);
                if (st->hidden)
                    piece_char(p, valid ? r + j : REPLACEMENT, valid ? l : 3);
                j += l;
            }
        }
        piece_end(p);
        return n;
    }
    /* Any other: intermediates, then a final 0-~ (if any). */
    while (j < n && r[j] >= 0x20 && r[j] <= 0x2f)
        j = skip_sub(r, j + 1, n);
    return j < n && r[j] >= 0x30 && r[j] <= 0x7e ? j + 1 : j;
}

/* 0: drawn as it is (printable ASCII, tab); 1: the others below 0x80; 2: not ASCII. */
static unsigned char KIND[256];

/* Whether the 8 bytes at s are all printable ASCII (0x20-0x7e): none below
 * 0x20 (each less 0x20 borrows), none 0x7f or above (each plus 1 reaches 0x80). */
static inline int printable8(const unsigned char *s) {
    uint64_t v;
    memcpy(&v, s, 8);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    return (((v - 0x20 * ones) & ~v) | ((v + ones) | v)) & highs ? 0 : 1;
}

static void scan(State *st) {
    const unsigned char *r = st->raw;
    size_t n = st->n, i = 0;
    while (i < n && !st->out.bad && !st->bad) {
        unsigned char c = r[i];
        if (KIND[c] == 0) {
            size_t j = i + 1;
            while (j + 8 <= n && printable8(r + j))
                j += 8;
            while (j < n && KIND[r[j]] == 0)
                j++;
            if (!st->alt)
                put(&st->out, r + i, j - i);
            else if (st->hidden)
                piece_char(&st->screen, r + i, j - i);
            i = j;
        } else if (c == 0x1b) {
            i = escape(st, i);
        } else if (c < 0x80) {
            if (!st->alt)
                text_ascii(st, c);
            else if (st->hidden)
                piece_ascii(&st->screen, c);
            i++;
        } else {
            int valid;
            size_t l = utf8_at(r, i, n, &valid);
            const unsigned char *s = valid ? r + i : REPLACEMENT;
            size_t k = valid ? l : 3;
            if (!st->alt)
                put(&st->out, s, k);
            else if (st->hidden)
                piece_char(&st->screen, s, k);
            i += l;
        }
    }
    if (st->alt)
        alt_off(st);
    if (st->crs || st->special)
        overwrite(st);
}

static void state_free(State *st) {
    free(st->out.p);
    free(st->lost.p);
    free(st->aside.p);
    free(st->drawn.p);
    free(st->cells);
    free(st->owner);
    free(st->starts);
    free(st->ends);
    free(st->gone);
}

static PyObject *run(PyObject *args, int hidden) {
    Py_buffer raw;
    PyObject *program;
    if (!PyArg_ParseTuple(args, "y*U", &raw, &program))
        return NULL;
    PyObject *name = PyUnicode_AsEncodedString(program, "utf-8", "surrogatepass");
    if (name == NULL) {
        PyBuffer_Release(&raw);
        return NULL;
    }
    State st;
    memset(&st, 0, sizeof st);
    st.raw = raw.buf;
    st.n = (size_t)raw.len;
    st.program = (const unsigned char *)PyBytes_AS_STRING(name);
    st.program_n = (size_t)PyBytes_GET_SIZE(name);
    st.hidden = hidden;
    st.payload.b = &st.aside;
    st.screen.b = &st.drawn;
    Py_BEGIN_ALLOW_THREADS
    if (grow(&st.out, st.n + 64) == 0)
        scan(&st);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (st.bad || st.out.bad || st.lost.bad || st.aside.bad || st.drawn.bad) {
        PyErr_NoMemory();
    } else {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)st.out.p, (Py_ssize_t)st.out.n,
                                              "surrogatepass");
        if (text != NULL && hidden) {
            /* hidden: the lines' pieces, then the strings' and the screen's */
            put(&st.lost, st.aside.p, st.aside.n);
            PyObject *rest =
                st.lost.bad ? PyErr_NoMemory()
                            : PyUnicode_DecodeUTF8((const char *)st.lost.p,
                                                   (Py_ssize_t)st.lost.n, "surrogatepass");
            result = rest == NULL ? NULL : PyTuple_Pack(2, text, rest);
            Py_XDECREF(rest);
            Py_DECREF(text);
        } else {
            result = text;
        }
    }
    state_free(&st);
    Py_DECREF(name);
    PyBuffer_Release(&raw);
    return result;
}

static PyObject *text(PyObject *self, PyObject *args) {
    (void)self;
    return run(args, 0);
}

static PyObject *text_parts(PyObject *self, PyObject *args) {
    (void)self;
    return run(args, 1);
}

/* ---- the words redaction looks for ---- */

typedef struct {
    Py_ssize_t *at;
    size_t n, cap;
} Hits;

static int add_hit(Hits *h, size_t i) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        Py_ssize_t *p = realloc(h->at, cap * sizeof *p);
        if (p == NULL)
            return 1;
        h->at = p;
        h->cap = cap;
    }
    h->at[h->n++] = (Py_ssize_t)i;
    return 0;
}

/* The words of three bytes or more that begin at s[i]: to their hits. */
static int match(Hits **hits, const unsigned char *s, size_t n, size_t i, const Py_ssize_t *head,
                 const Py_ssize_t *next, const unsigned char *chars, const size_t *start,
                 const size_t *len) {
    for (Py_ssize_t w = head[s[i]]; w >= 0; w = next[w])
        if (len[w] <= n - i && memcmp(chars + start[w], s + i, len[w]) == 0 &&
            add_hit(&(*hits)[w], i))
            return 1;
    return 0;
}

/* The words to look for, copied (the sequence may change while the GIL is let
 * go), indexed by their first byte and their first pairs. */
typedef struct {
    Py_ssize_t nw;
    unsigned char *chars;
    size_t *start, *len;
    Py_ssize_t *next;
    /* A bit for each pair of bytes that a word of three bytes or more begins with
     * (at0) or has after its first (at1); for each that a word of two is. */
    uint8_t *at0, *at1, *pairs;
    /* A bit for each hash (tri_hash) of the first three bytes of a word of three
     * or more: most places where a pair matches are passed over with no memcmp. */
    uint8_t *tri;
    /* The words by first byte: of three bytes or more, of two, of one. */
    Py_ssize_t head[256], head2[256], single[256];
    int shorter;
} Words;

static void words_free(Words *ws) {
    free(ws->chars), free(ws->start), free(ws->len), free(ws->next);
    free(ws->at0), free(ws->at1), free(ws->pairs), free(ws->tri);
}

static inline unsigned tri_hash(const unsigned char *s) {
    return ((unsigned)s[0] * 0x9e37u ^ (unsigned)s[1] * 0x2f1u ^ (unsigned)s[2]) & 0xffffu;
}

/* `words` (a sequence of bytes, none empty) into `ws`; -1 with an exception set. */
static int words_make(Words *ws, PyObject *words, const char *who) {
    memset(ws, 0, sizeof *ws);
    PyObject *seq = PySequence_Fast(words, "words must be a sequence of bytes");
    if (seq == NULL)
        return -1;
    Py_ssize_t nw = PySequence_Fast_GET_SIZE(seq);
    size_t total = 0;
    for (Py_ssize_t w = 0; w < nw; w++) {
        PyObject *word = PySequence_Fast_GET_ITEM(seq, w);
        if (!PyBytes_Check(word) || PyBytes_GET_SIZE(word) == 0) {
            PyErr_Format(PyExc_ValueError, "%s: each word must be bytes, not empty", who);
            Py_DECREF(seq);
            return -1;
        }
        total += (size_t)PyBytes_GET_SIZE(word);
    }
    ws->nw = nw;
    ws->chars = malloc(total + 1);
    ws->start = malloc(((size_t)nw + 1) * sizeof *ws->start);
    ws->len = malloc(((size_t)nw + 1) * sizeof *ws->len);
    ws->next = malloc(((size_t)nw + 1) * sizeof *ws->next);
    ws->at0 = calloc(8192, 1), ws->at1 = calloc(8192, 1), ws->pairs = calloc(8192, 1);
    ws->tri = calloc(8192, 1);
    if (ws->chars == NULL || ws->start == NULL || ws->len == NULL || ws->next == NULL ||
        ws->at0 == NULL || ws->at1 == NULL || ws->pairs == NULL || ws->tri == NULL) {
        words_free(ws);
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (int b = 0; b < 256; b++)
        ws->head[b] = ws->head2[b] = ws->single[b] = -1;
    size_t at = 0;
    for (Py_ssize_t w = nw - 1; w >= 0; w--) { /* (lists in the words' order) */
        PyObject *word = PySequence_Fast_GET_ITEM(seq, w);
        ws->len[w] = (size_t)PyBytes_GET_SIZE(word);
        ws->start[w] = at;
        memcpy(ws->chars + at, PyBytes_AS_STRING(word), ws->len[w]);
        at += ws->len[w];
        const unsigned char *s = ws->chars + ws->start[w];
        Py_ssize_t *list = ws->single;
        if (ws->len[w] >= 3) {
            unsigned p0 = ((unsigned)s[0] << 8) | s[1], p1 = ((unsigned)s[1] << 8) | s[2];
            ws->at0[p0 >> 3] |= (uint8_t)(1u << (p0 & 7));
            ws->at1[p1 >> 3] |= (uint8_t)(1u << (p1 & 7));
            unsigned h = tri_hash(s);
            ws->tri[h >> 3] |= (uint8_t)(1u << (h & 7));
            list = ws->head;
        } else if (ws->len[w] == 2) {
            unsigned pair = ((unsigned)s[0] << 8) | s[1];
            ws->pairs[pair >> 3] |= (uint8_t)(1u << (pair & 7));
            list = ws->head2;
        }
        ws->shorter |= ws->len[w] < 3;
        ws->next[w] = list[s[0]];
        list[s[0]] = w;
    }
    Py_DECREF(seq);
    return 0;
}

/* Whether a word of three bytes or more may begin at s[i]. */
static inline int tri_at(const Words *ws, const unsigned char *s, size_t n, size_t i) {
    if (i + 3 > n)
        return 0;
    unsigned h = tri_hash(s + i);
    return ws->tri[h >> 3] & (1u << (h & 7));
}

/* Every place of each word in s[0..n) into hits (nw of them): 1 when memory ran
 * out. Needs no GIL. */
static int words_find(const Words *ws, const unsigned char *s, size_t n, Hits *hits) {
    int bad = 0;
    /* A word of three bytes or more holds the pair at an even place that
     * begins at its first byte or at its second: every other pair is looked at. */
    for (size_t p = 0; p + 1 < n && !bad; p += 2) {
        unsigned pair = ((unsigned)s[p] << 8) | s[p + 1], bit = 1u << (pair & 7);
        if (p > 0 && (ws->at1[pair >> 3] & bit) && tri_at(ws, s, n, p - 1))
            bad = match(&hits, s, n, p - 1, ws->head, ws->next, ws->chars, ws->start, ws->len);
        if (!bad && (ws->at0[pair >> 3] & bit) && tri_at(ws, s, n, p))
            bad = match(&hits, s, n, p, ws->head, ws->next, ws->chars, ws->start, ws->len);
    }
    for (size_t i = 0; ws->shorter && i < n && !bad; i++) { /* (no such word in redaction's) */
        unsigned char c = s[i];
        if (i + 1 < n) {
            unsigned pair = ((unsigned)c << 8) | s[i + 1];
            if (ws->pairs[pair >> 3] & (1u << (pair & 7)))
                for (Py_ssize_t w = ws->head2[c]; w >= 0 && !bad; w = ws->next[w])
                    if (s[i + 1] == ws->chars[ws->start[w] + 1])
                        bad = add_hit(&hits[w], i);
        }
        for (Py_ssize_t w = ws->single[c]; w >= 0 && !bad; w = ws->next[w])
            bad = add_hit(&hits[w], i);
    }
    return bad;
}

static PyObject *int_list(const Py_ssize_t *at, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t k = 0; list != NULL && k < n; k++) {
        PyObject *v = PyLong_FromSsize_t(at[k]);
        if (v == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, (Py_ssize_t)k, v);
    }
    return list;
}

/* A list of each word's hits (freed here, whatever happens); NULL when `bad`. */
static PyObject *hit_lists(Hits *hits, Py_ssize_t nw, int bad) {
    PyObject *result = bad ? PyErr_NoMemory() : PyList_New(nw);
    for (Py_ssize_t w = 0; result != NULL && w < nw; w++) {
        PyObject *list = int_list(hits[w].at, hits[w].n);
        if (list == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, w, list);
    }
    for (Py_ssize_t w = 0; w < nw; w++)
        free(hits[w].at);
    free(hits);
    return result;
}

/* ---- scan_words: redact._Scan's one pass ---- */

/* The byte a character is in _Scan.lowb: ASCII lowercased, KELVIN SIGN k, LONG S
 * s, DOTLESS I and I WITH DOT ABOVE i (as the rules, ignoring case, take them),
 * any other `?`. */
static unsigned char LOWB[256];

#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL

static inline unsigned char low_byte(Py_UCS4 c) {
    if (c < 256)
        return LOWB[c];
    return c == 0x212a ? 'k' : c == 0x17f ? 's' : (c == 0x131 || c == 0x130) ? 'i' : '?';
}

/* ASCII whitespace as Python's re takes it for `\s` in a str pattern (it takes
 * more, none of it ASCII: `?` in lowb, never taken for whitespace here). */
static inline int re_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Whether a hit of a word checked as `kind` (its place `at`, its length `len`
 * in lowb) may begin a match of its rule; 0 only where the rule's pattern
 * cannot match there, whatever else the text holds:
 *   'u' (`://`, url-credentials: `://[^/\s:@]+:[^@\s/]+@`): a user, a colon,
 *       a password and an @ follow;
 *   'c' (`curl`, curl-user): `-u` (-u, -U, --user, --proxy-user, lowercased)
 *       is after it before the command ends (; & | or a line's end). */
static int may_match(const unsigned char *s, size_t n, size_t at, size_t len, char kind) {
    size_t i = at + len;
    if (kind == 'u') {
        size_t a = i;
        while (i < n && s[i] != '/' && s[i] != ':' && s[i] != '@' && !re_space(s[i]))
            i++;
        if (i == a || i == n || s[i] != ':')
            return 0;
        a = ++i;
        while (i < n && s[i] != '@' && s[i] != '/' && !re_space(s[i]))
            i++;
        return i > a && i < n && s[i] == '@';
    }
    if (kind == 'c') {
        for (; i + 1 < n && s[i] != ';' && s[i] != '&' && s[i] != '|' && s[i] != '\n'; i++)
            if (s[i] == '-' && s[i + 1] == 'u')
                return 1;
        return 0;
    }
    return 1;
}

/* scan_words(text, words, token_chars, run[, checks]) -> (lowb, hits, runs[,
 * checked]): `lowb` the text as _Scan.lowb has it, `hits` where each word is in
 * lowb (overlapping ones too, in order), `runs` the start and end of each run
 * of at least `run` bytes of `token_chars` in lowb, one after the other in one
 * list; with `checks` (a byte a word, 0 for none: see may_match), `checked`
 * the hits of each word checked that pass (an empty list for the others). */
static PyObject *scan_words(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *value, *words;
    Py_buffer chars, checks = {0};
    Py_ssize_t run;
    if (!PyArg_ParseTuple(args, "UOy*n|y*", &value, &words, &chars, &run, &checks))
        return NULL;
    char check_of[64] = {0};
    int checking = checks.buf != NULL;
    if (checking) {
        if (checks.len > (Py_ssize_t)sizeof check_of) {
            PyBuffer_Release(&checks);
            PyBuffer_Release(&chars);
            PyErr_SetString(PyExc_ValueError, "scan_words: checks for 64 words at most");
            return NULL;
        }
        memcpy(check_of, checks.buf, (size_t)checks.len);
        PyBuffer_Release(&checks);
    }
    uint8_t token[256] = {0};
    for (Py_ssize_t i = 0; i < chars.len; i++)
        token[((const unsigned char *)chars.buf)[i]] = 1;
    PyBuffer_Release(&chars);
    if (run < 1) {
        PyErr_SetString(PyExc_ValueError, "scan_words: run must be at least 1");
        return NULL;
    }
    Words ws;
    if (words_make(&ws, words, "scan_words") < 0)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    PyObject *lowb = PyBytes_FromStringAndSize(NULL, n);
    Hits *hits = calloc((size_t)ws.nw + 1, sizeof *hits);
    if (lowb == NULL || hits == NULL) {
        Py_XDECREF(lowb);
        free(hits);
        words_free(&ws);
        return PyErr_NoMemory();
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(lowb);
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    Hits runs = {NULL, 0, 0};
    Hits *passed = checking ? calloc((size_t)ws.nw + 1, sizeof *passed) : NULL;
    int bad = checking && passed == NULL;
    Py_BEGIN_ALLOW_THREADS
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *d = data;
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) { /* eight ASCII bytes at once, A-Z made a-z */
            uint64_t w;
            memcpy(&w, d + i, 8);
            if (w & HIGH) {
                for (int k = 0; k < 8; k++)
                    out[i + k] = LOWB[d[i + k]];
                continue;
            }
            uint64_t upper = ((w + ONES * (0x80 - 'A')) ^ (w + ONES * (0x80 - 'Z' - 1))) & HIGH;
            w |= upper >> 2;
            memcpy(out + i, &w, 8);
        }
        for (; i < n; i++)
            out[i] = LOWB[d[i]];
    } else if (kind == PyUnicode_2BYTE_KIND) {
        const Py_UCS2 *d = data;
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = d[i] < 256 ? LOWB[d[i]] : low_byte(d[i]);
    } else {
        const Py_UCS4 *d = data;
        for (Py_ssize_t i = 0; i < n; i++)
            out[i] = d[i] < 256 ? LOWB[d[i]] : low_byte(d[i]);
    }
    bad = bad || words_find(&ws, out, (size_t)n, hits);
    for (Py_ssize_t w = 0; checking && !bad && w < ws.nw && w < (Py_ssize_t)sizeof check_of; w++)
        for (size_t k = 0; check_of[w] && !bad && k < hits[w].n; k++)
            if (may_match(out, (size_t)n, (size_t)hits[w].at[k], ws.len[w], check_of[w]))
                bad = add_hit(&passed[w], (size_t)hits[w].at[k]);
    /* A run `want` long holds the byte `want` - 1 after where it may begin (at
     * `at`: the text's start or after a byte not of a token): where that byte
     * is none, no run begins before it, and most of the text is passed over so. */
    size_t at = 0, want = (size_t)run, size = (size_t)n;
    while (!bad && at + want <= size) {
        size_t mid = at + want - 1;
        if (!token[out[mid]]) {
            at = mid + 1;
            continue;
        }
        size_t a = mid, z = mid + 1;
        while (a > at && token[out[a - 1]])
            a--;
        while (z < size && token[out[z]])
            z++;
        if (z - a >= want)
            bad = add_hit(&runs, a) || add_hit(&runs, z);
        at = z + 1;
    }
    Py_END_ALLOW_THREADS
    words_free(&ws);
    PyObject *found = hit_lists(hits, ws.nw, bad);
    PyObject *spans = found == NULL ? NULL : int_list(runs.at, runs.n);
    PyObject *through = NULL;
    if (passed != NULL) /* (freed by hit_lists, whatever happens) */
        through = hit_lists(passed, ws.nw, bad || spans == NULL);
    free(runs.at);
    if (spans == NULL || (checking && through == NULL)) {
        Py_XDECREF(found);
        Py_XDECREF(spans);
        Py_XDECREF(through);
        Py_DECREF(lowb);
        return NULL;
    }
    if (checking)
        return Py_BuildValue("(NNNN)", lowb, found, spans, through);
    return Py_BuildValue("(NNN)", lowb, found, spans);
}

static PyMethodDef methods[] = {
    {"text", text, METH_VARARGS,
     "text(raw, program) -> str: termtext.text_of's text (program: what ran full-screen)."},
    {"text_parts", text_parts, METH_VARARGS,
     "text_parts(raw, program) -> (text, hidden): termtext.text_parts."},
    {"scan_words", scan_words, METH_VARARGS,
     "scan_words(text, words, token_chars, run[, checks]) -> (lowb, hits, runs[, checked]): "
     "redact._Scan's lowercased bytes, where each of words is in them (overlapping ones too, "
     "in order), the runs of token_chars at least run long, and with checks (a byte a word) "
     "the hits of each word checked where its rule may match."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_termtext", "The text of recorded output, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__termtext(void) {
    for (int c = 0; c < 256; c++)
        KIND[c] = c >= 0x80 ? 2 : ((c >= 0x20 && c < 0x7f) || c == '\t') ? 0 : 1;
    for (int c = 0; c < 256; c++)
        LOWB[c] = c >= 0x80 ? '?' : (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : (unsigned char)c;
    return PyModule_Create(&module);
}
