/*
 * Times an interpreter's own Invoke() called back to back from C, without the Python call that
 * `Interpreter.invoke()` adds to every invoke (~0.5 us here: the Python method, pybind11, and the
 * GIL released and taken again).  This is what LiteRT's C++ benchmark tool times, and what an
 * application in C, C++ or Java pays.  Built by benchmarks/sparse_delegate.py, which passes the
 * address of tflite::impl::Interpreter::Invoke() in the loaded LiteRT library and the
 * interpreter object behind a Python `Interpreter`; the member function takes `this` as its one
 * argument and returns TfLiteStatus (an int) under the x86-64 and AArch64 C++ ABIs.
 */
#include <time.h>

typedef int (*InvokeFn)(void* interpreter);

/* Nanoseconds per invoke over n invokes; *status gets the OR of the statuses (0: all ok). */
double invoke_loop_ns(void* invoke, void* interpreter, long n, int* status) {
  InvokeFn fn = (InvokeFn)invoke;
  struct timespec t0, t1;
  int any = 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n; i++) any |= fn(interpreter);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  *status = any;
  return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / (double)n;
}
