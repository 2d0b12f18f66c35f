/* nbody - the five-body problem (Sun and the four gas giants) integrated with a
 * symplectic Euler step of 0.01 days, size steps, in double precision: the
 * floating-point workload (the x87 on the guest, SSE2 natively).
 *
 * Both builds compute the same IEEE doubles: the guest sets the x87 precision
 * control to 53 bits (FLDCW 0x027F), so each +, -, *, / and square root rounds
 * to a double exactly as SSE2 does (no value here comes near the range where the
 * x87's wider exponent would differ). Square roots are the hardware instruction
 * of each build (FSQRT, SQRTSD), both correctly rounded. Checksum: the bits of
 * the final energy folded to 32 bits; the self-check is that the energy stays
 * within 1e-2 of its start (the method's error oscillates, ~3e-4 here). */
#include "wl.h"

#define N_BODIES 5
#define PI 3.141592653589793
#define SOLAR_MASS (4 * PI * PI)
#define DAYS_PER_YEAR 365.24
#define DT 0.01

struct body {
    double x, y, z, vx, vy, vz, mass;
};

static struct body bodies[N_BODIES];

static const struct body start[N_BODIES] = {
    {0, 0, 0, 0, 0, 0, SOLAR_MASS},
    {4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
     1.66007664274403694e-03 * DAYS_PER_YEAR, 7.69901118419740425e-03 * DAYS_PER_YEAR,
     -6.90460016972063023e-05 * DAYS_PER_YEAR, 9.54791938424326609e-04 * SOLAR_MASS},
    {8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
     -2.76742510726862411e-03 * DAYS_PER_YEAR, 4.99852801234917238e-03 * DAYS_PER_YEAR,
     2.30417297573763929e-05 * DAYS_PER_YEAR, 2.85885980666130812e-04 * SOLAR_MASS},
    {1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
     2.96460137564761618e-03 * DAYS_PER_YEAR, 2.37847173959480950e-03 * DAYS_PER_YEAR,
     -2.96589568540237556e-05 * DAYS_PER_YEAR, 4.36624404335156298e-05 * SOLAR_MASS},
    {1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
     2.68067772490389322e-03 * DAYS_PER_YEAR, 1.62824170038242295e-03 * DAYS_PER_YEAR,
     -9.51592254519715870e-05 * DAYS_PER_YEAR, 5.15138902046611451e-05 * SOLAR_MASS},
};

static double hw_sqrt(double v)
{
    double r;
#if defined(__i386__)
    __asm__("fsqrt" : "=t"(r) : "0"(v));
#else
    __asm__("sqrtsd %1, %0" : "=x"(r) : "x"(v));
#endif
    return r;
}

static void advance(void)
{
    for (int i = 0; i < N_BODIES; i++) {
        struct body *a = &bodies[i];
        for (int j = i + 1; j < N_BODIES; j++) {
            struct body *b = &bodies[j];
            double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = DT / (d2 * hw_sqrt(d2));
            a->vx -= dx * b->mass * mag;
            a->vy -= dy * b->mass * mag;
            a->vz -= dz * b->mass * mag;
            b->vx += dx * a->mass * mag;
            b->vy += dy * a->mass * mag;
            b->vz += dz * a->mass * mag;
        }
    }
    for (int i = 0; i < N_BODIES; i++) {
        bodies[i].x += DT * bodies[i].vx;
        bodies[i].y += DT * bodies[i].vy;
        bodies[i].z += DT * bodies[i].vz;
    }
}

static double energy(void)
{
    double e = 0;
    for (int i = 0; i < N_BODIES; i++) {
        const struct body *a = &bodies[i];
        e += 0.5 * a->mass * (a->vx * a->vx + a->vy * a->vy + a->vz * a->vz);
        for (int j = i + 1; j < N_BODIES; j++) {
            const struct body *b = &bodies[j];
            double dx = a->x - b->x, dy = a->y - b->y, dz = a->z - b->z;
            e -= a->mass * b->mass / hw_sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

int wl_run(uint32_t size)
{
    wl_check_size("nbody", size, 1, 0xFFFFFFFFu);
#if defined(__i386__)
    static const uint16_t double_precision = 0x027F;    /* PC = 53 bits, RC = nearest, all masked */
    __asm__ volatile("fldcw %0" : : "m"(double_precision));
#endif
    for (int i = 0; i < N_BODIES; i++)
        bodies[i] = start[i];
    /* the Sun moves against the planets' momentum, so the system's is zero */
    double px = 0, py = 0, pz = 0;
    for (int i = 0; i < N_BODIES; i++) {
        px += bodies[i].vx * bodies[i].mass;
        py += bodies[i].vy * bodies[i].mass;
        pz += bodies[i].vz * bodies[i].mass;
    }
    bodies[0].vx = -px / SOLAR_MASS;
    bodies[0].vy = -py / SOLAR_MASS;
    bodies[0].vz = -pz / SOLAR_MASS;

    double e0 = energy();
    for (uint32_t s = 0; s < size; s++)
        advance();
    double e1 = energy();
    double drift = (e1 - e0) / e0;
    if (!(drift < 1e-2 && drift > -1e-2)) {         /* NaN fails too */
        wl_printf("nbody: self-check failed: energy drifted by more than 1e-2\n");
        return WL_FAILED;
    }
    union { double d; uint64_t u; } bits = {e1};
    wl_printf("nbody size=%u checksum=0x%08x\n", size, (uint32_t)(bits.u ^ (bits.u >> 32)));
    return WL_OK;
}
