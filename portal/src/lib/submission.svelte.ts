import { tick } from "svelte";
import type { SubmitFunction } from "@sveltejs/kit";

/**
 * A form's progressive enhancement: `submitting` while the action runs, the
 * form kept as typed, then focus on the first field the server refused (or
 * the form's error message) so keyboard and screen-reader users land on it.
 * `onSuccess` may take focus elsewhere and ask for the form to be reset.
 */
export class Submission {
  submitting = $state(false);

  constructor(
    private readonly onSuccess?: () => void,
    private readonly resetOnSuccess = false,
  ) {}

  enhance: SubmitFunction = ({ formElement }) => {
    this.submitting = true;
    return async ({ update, result }) => {
      const succeeded = result.type === "success";
      await update({ reset: succeeded && this.resetOnSuccess });
      this.submitting = false;
      await tick();
      if (succeeded && this.onSuccess) this.onSuccess();
      else (formElement.querySelector<HTMLElement>('[aria-invalid="true"]') ?? document.getElementById("form-error"))?.focus();
    };
  };
}

/** A row's form that holds the row's `key` in `pending` while its action runs, so that the row can show it at once. */
export function pendingWhile(pending: { add(key: string): unknown; delete(key: string): unknown }, key: string): SubmitFunction {
  return () => {
    pending.add(key);
    return async ({ update }) => {
      await update();
      pending.delete(key);
    };
  };
}
