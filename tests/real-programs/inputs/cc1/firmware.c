/* A small AVR firmware for the cc1 workload: register access, a CRC, a sort,
 * fixed-point arithmetic and a lookup table, so the optimiser has work to do. */
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#define N_SAMPLES 16

static const uint8_t sine_table[32] PROGMEM = {
    128, 153, 177, 199, 218, 234, 245, 253, 255, 253, 245, 234, 218, 199, 177, 153,
    128, 103, 79,  57,  38,  22,  11,  3,   1,   3,   11,  22,  38,  57,  79,  103,
};

static volatile uint16_t samples[N_SAMPLES];

static uint16_t crc16_ccitt(const uint8_t *data, uint8_t len)
{
    uint16_t crc = 0xFFFF;
    while (len--) {
        crc ^= (uint16_t)(*data++) << 8;
        for (uint8_t i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

static void insertion_sort(uint16_t *v, uint8_t n)
{
    for (uint8_t i = 1; i < n; i++) {
        uint16_t x = v[i];
        int8_t j = (int8_t)(i - 1);
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

/* Q8.8 fixed-point multiply. */
static inline int16_t q88_mul(int16_t a, int16_t b)
{
    return (int16_t)(((int32_t)a * b) >> 8);
}

static uint16_t median_filter(void)
{
    uint16_t copy[N_SAMPLES];
    for (uint8_t i = 0; i < N_SAMPLES; i++)
        copy[i] = samples[i];
    insertion_sort(copy, N_SAMPLES);
    return (uint16_t)((copy[N_SAMPLES / 2 - 1] + copy[N_SAMPLES / 2]) / 2);
}

static uint16_t read_adc(uint8_t channel)
{
    ADMUX = (uint8_t)((1 << REFS0) | (channel & 0x07));
    ADCSRA |= (1 << ADSC);
    while (ADCSRA & (1 << ADSC))
        ;
    return ADC;
}

int main(void)
{
    uint8_t phase = 0;
    int16_t gain = 0x0180; /* 1.5 in Q8.8 */
    uint8_t frame[4];
    uint8_t never_used; /* -Wall warns about this: the workload has a stderr too */

    DDRB = 0xFF;
    ADCSRA = (1 << ADEN) | (1 << ADPS2) | (1 << ADPS1) | (1 << ADPS0);

    for (;;) {
        for (uint8_t i = 0; i < N_SAMPLES; i++)
            samples[i] = read_adc(i & 7);
        uint16_t m = median_filter();
        int16_t level = q88_mul((int16_t)pgm_read_byte(&sine_table[phase & 31]) - 128, gain);
        phase++;
        memcpy(frame, &m, sizeof m);
        frame[2] = (uint8_t)level;
        frame[3] = (uint8_t)(level >> 8);
        uint16_t crc = crc16_ccitt(frame, sizeof frame);
        PORTB = (uint8_t)(crc ^ (crc >> 8));
    }
}
