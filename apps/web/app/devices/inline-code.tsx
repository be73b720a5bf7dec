/**
 * Core's readiness messages and remedies mark commands and flags with backticks
 * (`intel_iommu=on`); shown as <code> so they read as something to type, not as prose.
 */
export function WithCode({ text }: { text: string }) {
  const parts = text.split('`');
  // An odd count of parts means balanced backticks; otherwise show the text as it is.
  if (parts.length % 2 === 0) return <>{text}</>;
  return (
    <>
      {parts.map((part, i) =>
        // biome-ignore lint/suspicious/noArrayIndexKey: the parts of one fixed string, never reordered.
        i % 2 === 1 ? <code key={i}>{part}</code> : <span key={i}>{part}</span>,
      )}
    </>
  );
}
