"""The offline batch runner's parts that need no engine: OpenAI Batch files in and out, the loop.

`python -m pipemax_sglang.run_batch -i IN.jsonl -o OUT.jsonl ...` answers every request line of
IN with one record line in OUT. This package is everything that needs no SGLang, so it is
tested in milliseconds: the engine side is pipemax_sglang/sglang/batch_runner.py.

    options.py    the runner's own flags (BatchOptions, frozen)
    requests.py   IN: one request per line, validated as it is read
    results.py    OUT: records appended whole; recovery of a killed run's file
    plan.py       what is left to do: IN against what OUT already holds
    feeder.py     the run's loop: N requests out at once, each record written as it arrives
    progress.py   the tally of this run, shown as a bar (terminal) or a line every N s
    summary.py    the end of a run, as text and as JSON
    signals.py    SIGINT / SIGTERM / SIGQUIT as an exception while no event loop runs
    sample.py     a seeded sample IN file (`make demo`, tests)

The protocol, in order (run_batch.py):

    resume = results.recover(OUT)         # drop a torn last line; custom_ids already answered
    plan = plan.scan(IN, resume, ...)     # one pass over IN: counts; invalid lines refused here
    Feeder(plan.pending(resume), answer,  # second pass, streamed: only what OUT lacks;
           writer, ...).run()             # each record one whole line, handed to the OS as
                                          # its answer arrives

Invariants: IN is read line by line, never held in memory (only the custom_ids seen, to catch
duplicates); reading IN twice gives the same items, so the scan, the run and any later resume
agree on which line is which; OUT only ever grows by whole lines, so after any kill (SIGKILL
included) it is a JSONL file plus at most one torn tail, which recovery removes.
"""
