/*
 * A minimal MLPerf Tiny device under test for QEMU's mps2-an385 (Cortex-M3), written for the
 * edge-lottery serial harness tests. It is the project's own code (not the upstream DUT library):
 * it speaks the same protocol (docs/mlperf-tiny-protocol.md §1-§2) over the CMSDK UART0 by
 * polling, times with CMSDK TIMER0 (25 MHz; with `-icount shift=0` the count is deterministic),
 * and its "model" is a fixed int8 dense layer (64 inputs -> 10 scores, weights from a formula the
 * Python test recomputes), printed as %0.3f-style fixed point without printf.
 * Build: arm-none-eabi-gcc -mcpu=cortex-m3 -mthumb -O2 -ffreestanding -nostdlib -T mps2.ld dut.c
 */
#include <stdint.h>

#define UART0 0x40004000u
#define TIMER0 0x40000000u
#define REG(a) (*(volatile uint32_t *)(a))
#define CMD_SIZE 80
#define MAX_DB 27648
#define N_IN 64
#define N_OUT 10

extern uint32_t _sbss, _ebss, _estack;
int main(void);

void reset_handler(void) {
    for (uint32_t *p = &_sbss; p < &_ebss; ++p) *p = 0;
    main();
    for (;;) {}
}

__attribute__((section(".vectors"), used)) static const void *vectors[2] = {&_estack, (void *)reset_handler};

static char cmd[CMD_SIZE];
static uint32_t cmd_len;
static uint8_t db[MAX_DB];
static uint32_t db_expected, db_have;
static int32_t scores[N_OUT];
static uint64_t ticks;
static uint32_t last_timer;

static void putc_(char c) {
    while (REG(UART0 + 4) & 1u) {}
    REG(UART0) = (uint32_t)(uint8_t)c;
}
static void puts_(const char *s) { while (*s) putc_(*s++); }
static void line(const char *s) { puts_(s); puts_("\r\n"); }
static void putu(uint64_t v) {
    char b[24];
    int n = 0;
    do { b[n++] = (char)('0' + v % 10u); v /= 10u; } while (v);
    while (n) putc_(b[--n]);
}
static int getc_(void) {
    while (!(REG(UART0 + 4) & 2u)) {}
    return (int)(REG(UART0) & 0xFFu);
}

static uint64_t now_us(void) {
    uint32_t v = REG(TIMER0 + 4);
    ticks += (uint32_t)(last_timer - v); /* down counter, wraps at 2^32 */
    last_timer = v;
    return ticks / 25u;
}
static void timestamp(void) { puts_("m-lap-us-"); putu(now_us()); puts_("\r\n"); }

static int8_t weight(int o, int i) { return (int8_t)(((o * 31 + i * 17) % 23) - 11); }

static void infer_once(void) {
    for (int o = 0; o < N_OUT; ++o) {
        int32_t acc = 0;
        for (int i = 0; i < N_IN; ++i) acc += (int32_t)(int8_t)db[i] * weight(o, i);
        scores[o] = acc;
    }
}

static void results(void) {
    puts_("m-results-[");
    for (int o = 0; o < N_OUT; ++o) {
        int32_t v = scores[o];
        if (v < 0) { putc_('-'); v = -v; }
        putu((uint32_t)v / 1000u);
        putc_('.');
        uint32_t f = (uint32_t)v % 1000u;
        putc_((char)('0' + f / 100u)); putc_((char)('0' + f / 10u % 10u)); putc_((char)('0' + f % 10u));
        if (o + 1 < N_OUT) putc_(',');
    }
    line("]");
}

static int streq(const char *a, const char *b) {
    while (*a && *a == *b) { ++a; ++b; }
    return *a == *b;
}
static int parse_u(const char *s, uint32_t *out) {
    uint32_t v = 0;
    if (!*s) return 0;
    for (; *s; ++s) { if (*s < '0' || *s > '9') return 0; v = v * 10u + (uint32_t)(*s - '0'); }
    *out = v;
    return 1;
}
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void execute(void) {
    char *tok[4] = {0, 0, 0, 0};
    int nt = 0;
    cmd[cmd_len < CMD_SIZE ? cmd_len : CMD_SIZE - 1] = 0;
    for (char *p = cmd; *p && nt < 4;) {
        while (*p == ' ') *p++ = 0;
        if (!*p) break;
        tok[nt++] = p;
        while (*p && *p != ' ') ++p;
    }
    if (nt == 0) { line("e-[Unknown command: ]"); }
    else if (streq(tok[0], "name")) { line("m-name-dut-[edge-lottery-qemu]"); }
    else if (streq(tok[0], "profile")) { line("m-profile-[ULPMark for tinyML Firmware V0.0.1]"); line("m-model-[ic01]"); }
    else if (streq(tok[0], "timestamp")) { timestamp(); }
    else if (streq(tok[0], "results")) { results(); }
    else if (streq(tok[0], "db") && nt > 1 && streq(tok[1], "load")) {
        uint32_t n = 0;
        if (nt < 3 || !parse_u(tok[2], &n) || n == 0) { line("e-[Command 'db load' must be >0 bytes]"); }
        else if (n > MAX_DB) { puts_("Supplied buffer size "); putu(n); puts_(" exceeds maximum of 27648\n"); }
        else { db_expected = n; db_have = 0; puts_("m-[Expecting "); putu(n); line(" bytes]"); }
    } else if (streq(tok[0], "db") && nt > 1 && streq(tok[1], "print")) {
        for (uint32_t i = 0; i < db_have; i += 8) {
            puts_("m-buffer");
            for (uint32_t j = i; j < i + 8 && j < db_have; ++j) {
                putc_('-'); putc_("0123456789abcdef"[db[j] >> 4]); putc_("0123456789abcdef"[db[j] & 15]);
            }
            puts_("\r\n");
        }
        puts_("\r\n");
    } else if (streq(tok[0], "db") && nt > 1) {
        const char *h = tok[1];
        uint32_t len = 0;
        while (h[len]) ++len;
        if (len & 1u) { line("e-[Insufficent number of hex digits]"); }
        else {
            for (uint32_t i = 0; i < len; i += 2) {
                int a = hexval(h[i]), b = hexval(h[i + 1]);
                if (a < 0 || b < 0) { puts_("e-[Invalid hex digit '"); putc_(h[i]); putc_(h[i + 1]); line("']"); break; }
                if (db_have < db_expected) {
                    db[db_have++] = (uint8_t)(a * 16 + b);
                    if (db_have == db_expected) { line("m-load-done"); break; }
                }
            }
        }
    } else if (streq(tok[0], "infer")) {
        uint32_t n = 1, w = 10;
        if (nt > 1 && (!parse_u(tok[1], &n) || n == 0)) { line("e-[Inference iterations must be >0]"); }
        else if (nt > 2 && !parse_u(tok[2], &w)) { line("e-[Inference warmup must be >=0]"); }
        else {
            puts_("m-warmup-start-"); putu(w); puts_("\r\n");
            for (uint32_t i = 0; i < w; ++i) infer_once();
            line("m-warmup-done");
            puts_("m-infer-start-"); putu(n); puts_("\r\n");
            timestamp();
            for (uint32_t i = 0; i < n; ++i) infer_once();
            timestamp();
            line("m-infer-done");
            results();
        }
    } else { puts_("e-[Unknown command: "); puts_(tok[0]); line("]"); }
    line("m-ready");
}

int main(void) {
    REG(UART0 + 0x10) = 16;  /* BAUDDIV */
    REG(UART0 + 8) = 3;      /* TX + RX enable */
    REG(TIMER0 + 8) = 0xFFFFFFFFu; /* RELOAD */
    REG(TIMER0 + 4) = 0xFFFFFFFFu; /* VALUE */
    REG(TIMER0 + 0) = 1;     /* enable */
    last_timer = REG(TIMER0 + 4);
    line("m-timestamp-mode-performance");
    timestamp();
    line("m-init-done");
    line("m-ready");
    for (;;) {
        char c = (char)getc_();
        if (c == '%') { execute(); cmd_len = 0; }
        else if (cmd_len < CMD_SIZE - 1) cmd[cmd_len++] = c;
        else cmd[CMD_SIZE - 2] = c; /* saturate like the upstream buffer */
    }
}
