/* The recorder's hot loop (relay.py says what it does), in C: per read of
 * the shell's output, the system calls `script` makes (read, write, poll) and
 * nothing else, where a turn of the proxy's loop in Python cost tens of
 * microseconds more.
 *
 * relay(master, out, watch, limit, prefix) -> (shown, held, ended, gone)
 *
 * The master and `out` are non-blocking or not; EINTR runs Python's signal
 * handlers (which only note the signal: the proxy acts on it once this
 * returns, the wake-up pipe being among `watch`). relay.py holds the same in
 * Python, which the tests hold this to. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#define MAX_WATCH 8

/* Whether `b` holds `prefix` or, at its end, a start of it (the splitter's to
 * see: a mark is removed before the terminal gets the bytes). */
static int may_mark(const char *b, Py_ssize_t n, const char *prefix, Py_ssize_t plen)
{
	const char *p = b, *end = b + n;
	if (plen == 0)
		return 0;
	while ((p = memchr(p, prefix[0], (size_t)(end - p))) != NULL) {
		Py_ssize_t left = end - p;
		if (memcmp(p, prefix, (size_t)(left < plen ? left : plen)) == 0)
			return 1;
		p++;
	}
	return 0;
}

/* Write all of b[0:n] to `fd`, waiting out EAGAIN: 0 written, 1 the terminal
 * is gone (EIO, EPIPE), -1 an exception is set. */
static int write_all(int fd, const char *b, Py_ssize_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, b, (size_t)n);
		if (w >= 0) {
			b += w;
			n -= w;
			continue;
		}
		if (errno == EINTR) {
			if (PyErr_CheckSignals() < 0)
				return -1;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
			struct pollfd p = {fd, POLLOUT, 0};
			int r;
			Py_BEGIN_ALLOW_THREADS
			r = poll(&p, 1, 1000);
			Py_END_ALLOW_THREADS
			if (r < 0 && errno == EINTR && PyErr_CheckSignals() < 0)
				return -1;
		} else if (errno == EIO || errno == EPIPE) {
			return 1;
		} else {
			PyErr_SetFromErrno(PyExc_OSError);
			return -1;
		}
	}
	return 0;
}

static PyObject *relay(PyObject *self, PyObject *args)
{
	int master, out;
	PyObject *watch_obj;
	Py_ssize_t limit, plen;
	const char *prefix;
	struct pollfd fds[1 + MAX_WATCH];
	Py_ssize_t nwatch, len = 0;
	int ended = 0, gone = 0;
	PyObject *shown, *held = NULL, *watch;
	(void)self;

	if (!PyArg_ParseTuple(args, "iiOny#", &master, &out, &watch_obj, &limit, &prefix, &plen))
		return NULL;
	if (limit < 1) {
		PyErr_SetString(PyExc_ValueError, "limit must be at least 1");
		return NULL;
	}
	watch = PySequence_Fast(watch_obj, "watch must be a sequence of file descriptors");
	if (watch == NULL)
		return NULL;
	nwatch = PySequence_Fast_GET_SIZE(watch);
	if (nwatch > MAX_WATCH) {
		Py_DECREF(watch);
		PyErr_SetString(PyExc_ValueError, "too many file descriptors to watch");
		return NULL;
	}
	fds[0].fd = master;
	fds[0].events = POLLIN;
	for (Py_ssize_t i = 0; i < nwatch; i++) {
		long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(watch, i));
		if (fd < 0 || fd > INT_MAX) {
			Py_DECREF(watch);
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_ValueError, "not a file descriptor");
			return NULL;
		}
		fds[1 + i].fd = (int)fd;
		fds[1 + i].events = POLLIN;
	}
	Py_DECREF(watch);

	shown = PyBytes_FromStringAndSize(NULL, limit);
	if (shown == NULL)
		return NULL;
	char *buf = PyBytes_AS_STRING(shown);
	for (;;) {
		/* The caller polled: the first read needs no poll of its own. */
		ssize_t n = read(master, buf + len, (size_t)(limit - len));
		if (n < 0) {
			if (errno == EINTR) {
				if (PyErr_CheckSignals() < 0)
					goto fail;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EIO) { /* every process on the slave is gone */
				ended = 1;
				break;
			}
			PyErr_SetFromErrno(PyExc_OSError);
			goto fail;
		}
		if (n == 0) {
			ended = 1;
			break;
		}
		if (may_mark(buf + len, n, prefix, plen)) {
			held = PyBytes_FromStringAndSize(buf + len, n);
			if (held == NULL)
				goto fail;
			break;
		}
		int w = write_all(out, buf + len, n);
		len += n; /* shown, or at least printed by the shell when the terminal is gone */
		if (w < 0)
			goto fail;
		if (w > 0) {
			gone = 1;
			break;
		}
		if (len >= limit)
			break;
		int r = poll(fds, (nfds_t)(1 + nwatch), 0);
		if (r < 0) {
			if (errno == EINTR && PyErr_CheckSignals() < 0)
				goto fail;
			break; /* a signal: the proxy's to act on */
		}
		if (r == 0 || fds[0].revents == 0)
			break; /* the output paused */
		for (Py_ssize_t i = 1; i <= nwatch; i++)
			if (fds[i].revents)
				goto done; /* typed input or a signal: the proxy's turn */
	}
done:
	if (len < limit && _PyBytes_Resize(&shown, len) < 0) {
		Py_XDECREF(held);
		return NULL;
	}
	if (held == NULL) {
		held = PyBytes_FromStringAndSize(NULL, 0);
		if (held == NULL) {
			Py_DECREF(shown);
			return NULL;
		}
	}
	return Py_BuildValue("(NNNN)", shown, held, PyBool_FromLong(ended), PyBool_FromLong(gone));
fail:
	Py_DECREF(shown);
	Py_XDECREF(held);
	return NULL;
}

static PyMethodDef methods[] = {
	{"relay", relay, METH_VARARGS,
	 "relay(master, out, watch, limit, prefix) -> (shown, held, ended, gone)\n\n"
	 "What relay.py's relay does, in C."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_relay", "The recorder's hot loop (recorder/relay.py), in C.", -1,
	methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__relay(void)
{
	return PyModule_Create(&module);
}
