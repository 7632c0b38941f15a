/**
 * Whole-number options of the long-running scripts (`--name N`). A value that is not a whole
 * number of at least `min` ends the process with exit code 2 and a line naming the option.
 */
export function wholeNumberOption(name: string, fallback: number, min: number): number {
  const index = process.argv.indexOf(`--${name}`);
  if (index < 0) return fallback;
  const value = Number(process.argv[index + 1]);
  if (!Number.isInteger(value) || value < min) {
    const wanted =
      min === 1
        ? "a positive whole number"
        : min === 0
          ? "a whole number"
          : `a whole number of at least ${min}`;
    console.error(`--${name} needs ${wanted}, got "${process.argv[index + 1]}"`);
    process.exit(2);
  }
  return value;
}
