"""Azure Functions app (Python v2 model): one timer that runs one audit. All logic lives in `auditors`."""

import logging

import azure.functions as func

app = func.FunctionApp()


@app.timer_trigger(schedule="%AUDIT_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def acr_pull_audit(timer: func.TimerRequest) -> None:
    from auditors.pipeline import timer_run  # imported per run: nothing is built when the host loads the app

    log = logging.getLogger("acr_pull_auditor")
    if timer.past_due:
        log.warning("acr-pull-audit timer is past due")
    timer_run(log.info)
