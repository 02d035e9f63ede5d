#!/bin/sh
# Latency baseline from the qwengw audit log: per UTC day, the mean TTFT and duration of
# successful chat completions, next to the mean of the 7 days before. Flags a day that is more
# than THRESHOLD percent (default 30) above its 7-day moving average; exits 1 when the last day
# in the log is flagged (so cron/monitoring can alert). Days with fewer than MIN_SAMPLES
# (default 30) answers are shown but neither flagged nor used in the average: a handful of
# requests says nothing about the model's latency.
#   latency-baseline.sh [AUDIT_GLOB] [MODEL]
#   latency-baseline.sh '/var/log/qwengw/audit.log*' qwen3
# Reads plain and gzip-rotated files (zcat -f). Needs jq. Note: the last day may be partial.
set -eu
LOGS=${1:-/var/log/qwengw/audit.log*}
MODEL=${2:-}
THRESHOLD=${THRESHOLD:-30}
MIN_SAMPLES=${MIN_SAMPLES:-30}
# shellcheck disable=SC2086  # the glob must expand
zcat -f $LOGS \
| jq -r --arg model "$MODEL" '
    select(.path == "/v1/chat/completions" and .status == 200 and .ttft_ms != null
           and ($model == "" or .model == $model))
    | [.time[0:10], .ttft_ms, .duration_ms] | @tsv' \
| sort \
| awk -F'\t' -v limit="$THRESHOLD" -v min="$MIN_SAMPLES" '
    $1 != day { if (day != "") emit(); day = $1; n = t = d = 0 }
    { n++; t += $2; d += $3 }
    function emit() { days++; D[days] = day; T[days] = t / n; U[days] = d / n; N[days] = n }
    END {
        if (day == "") { print "no successful chat completions in the log"; exit 2 }
        emit(); bad = 0; f = 1 + limit / 100
        printf "%-10s %6s %9s %9s %11s %11s\n", "day", "n", "ttft_ms", "dur_ms", "ttft_7d_ma", "dur_7d_ma"
        for (i = 1; i <= days; i++) {
            mt = md = 0; k = 0
            for (j = i - 7; j < i; j++) if (j >= 1 && N[j] >= min) { mt += T[j]; md += U[j]; k++ }
            flag = ""
            if (k && N[i] < min) flag = " (too few to judge)"
            else if (k) {
                mt /= k; md /= k
                if (T[i] > f * mt) flag = flag " TTFT+" int(100 * (T[i] / mt - 1)) "%"
                if (U[i] > f * md) flag = flag " DURATION+" int(100 * (U[i] / md - 1)) "%"
            }
            printf "%-10s %6d %9.0f %9.0f %11s %11s%s\n", D[i], N[i], T[i], U[i],
                   k ? sprintf("%.0f", mt) : "-", k ? sprintf("%.0f", md) : "-", flag
            if (i == days && flag != "" && N[i] >= min) bad = 1
        }
        exit bad
    }'
