"""Write the illustrative Banking77 files of the support assistant (answers and knowledge base).

The answer templates and knowledge-base entries below were written for polyculture's examples:
they are illustrative, describe no real bank, and are not part of the Banking77 data set. Run

    python examples/support/make_examples.py [--categories ../shared/data/banking77/categories.json]

to rewrite ``banking77-answers.csv`` and ``knowledge-base.csv`` beside this file; with
``--categories`` it also checks that every intent named here is one of Banking77's 77 intents.

Five factual intents (which countries, currencies and cards are supported, the age limit, ...)
have no template on purpose: their messages are answered from the knowledge base.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

APP = "in the app"

TEMPLATES: dict[str, str] = {
    "activate_my_card": f"To activate your card, open Cards {APP} and tap Activate.",
    "apple_pay_or_google_pay": f"Add your card to Apple Pay or Google Pay from Cards {APP}.",
    "atm_support": "Our cards work at any ATM that shows the Visa or Mastercard logo.",
    "automatic_top_up": f"Turn on automatic top-up under Top up > Auto top-up {APP}.",
    "balance_not_updated_after_bank_transfer": (
        "Bank transfers can take up to 2 working days to show in your balance."
    ),
    "balance_not_updated_after_cheque_or_cash_deposit": (
        "Cheque and cash deposits can take up to 5 working days to show in your balance."
    ),
    "beneficiary_not_allowed": (
        "Some recipients cannot be paid for security reasons; check their details or contact us."
    ),
    "cancel_transfer": f"A transfer that is still pending can be cancelled from Payments {APP}.",
    "card_about_to_expire": "We send a new card before yours expires; no action is needed.",
    "card_acceptance": "Your card is accepted wherever Visa or Mastercard is accepted.",
    "card_arrival": "Cards usually arrive within 5 working days; you can track yours in the app.",
    "card_delivery_estimate": "Standard delivery takes 3 to 5 working days after you order.",
    "card_linking": f"Link a card you already have under Cards > Link a card {APP}.",
    "card_not_working": f"If your card does not work, check that it is not frozen {APP}.",
    "card_payment_fee_charged": "Card payments are free in most currencies; see the fees page.",
    "card_payment_not_recognised": f"If you do not recognise a payment, freeze your card {APP}.",
    "card_payment_wrong_exchange_rate": "Card payments use the exchange rate of the network.",
    "card_swallowed": "If an ATM kept your card, freeze it in the app and order a new one.",
    "cash_withdrawal_charge": "Withdrawals are free up to a monthly limit, then a small fee.",
    "cash_withdrawal_not_recognised": f"If you did not make a withdrawal, freeze your card {APP}.",
    "change_pin": "You can change your PIN at any ATM that offers PIN services.",
    "compromised_card": f"If your card may be compromised, freeze it {APP} and order a new one.",
    "contactless_not_working": "Contactless needs one chip-and-PIN payment first after activation.",
    "declined_card_payment": "A card payment can be declined for low balance or a frozen card.",
    "declined_cash_withdrawal": "A withdrawal can be declined by the ATM or for a low balance.",
    "declined_transfer": "A transfer can be declined for missing details or a security check.",
    "direct_debit_payment_not_recognised": "Contact us if you do not recognise a direct debit.",
    "disposable_card_limits": "Disposable virtual cards can be created up to 20 times a day.",
    "edit_personal_details": f"Update your personal details under Profile {APP}.",
    "exchange_charge": "Exchanging currencies is free up to a monthly limit.",
    "exchange_rate": "We use the interbank exchange rate shown in the app at the time.",
    "exchange_via_app": f"Exchange currencies under Accounts > Exchange {APP}.",
    "extra_charge_on_statement": "An extra charge is often a fee or a pending payment.",
    "failed_transfer": "If a transfer failed, the money returns to your account within 2 days.",
    "get_disposable_virtual_card": f"Create a disposable virtual card under Cards {APP}.",
    "get_physical_card": f"Order a physical card under Cards > Order {APP}.",
    "getting_spare_card": f"You can order a spare card under Cards {APP}.",
    "getting_virtual_card": f"Create a virtual card under Cards > New virtual card {APP}.",
    "lost_or_stolen_card": f"Freeze your card at once {APP}, then order a replacement.",
    "lost_or_stolen_phone": "Log in from another device and freeze your cards, or contact us.",
    "order_physical_card": f"Order a physical card under Cards > Order {APP}.",
    "passcode_forgotten": "Tap Forgot passcode on the login screen to reset it.",
    "pending_card_payment": "Card payments stay pending until the merchant completes them.",
    "pending_cash_withdrawal": "Withdrawals can show as pending for up to 2 working days.",
    "pending_top_up": "Top-ups can stay pending for a few minutes while we check them.",
    "pending_transfer": "Transfers can stay pending for up to 2 working days.",
    "pin_blocked": "Unblock your PIN at any ATM that offers PIN services.",
    "receiving_money": "Share your account details from the app to receive money.",
    "Refund_not_showing_up": "Refunds can take up to 10 working days to show.",
    "request_refund": "Ask the merchant for a refund; we can help if they do not reply.",
    "reverted_card_payment?": "A reverted payment means the merchant cancelled it.",
    "terminate_account": f"You can close your account under Profile > Close account {APP}.",
    "top_up_by_bank_transfer_charge": "Top-ups by bank transfer are free.",
    "top_up_by_card_charge": "Top-ups by card may carry a small fee, shown before you confirm.",
    "top_up_by_cash_or_cheque": "Top-ups by cash or cheque are not available yet.",
    "top_up_failed": "A top-up can fail if your bank declines it; try another card.",
    "top_up_limits": "Top-up limits are shown under Top up in the app.",
    "top_up_reverted": "A reverted top-up returns to the card it came from within a few days.",
    "topping_up_by_card": f"Top up with a card under Top up > Card {APP}.",
    "transaction_charged_twice": "A double charge is usually a pending payment that will drop off.",
    "transfer_fee_charged": "Transfers in the same currency are free; others show their fee.",
    "transfer_into_account": "Send money to your account with the details shown in the app.",
    "transfer_not_received_by_recipient": "Transfers can take up to 2 working days to arrive.",
    "transfer_timing": "Most transfers arrive within 1 to 2 working days.",
    "unable_to_verify_identity": "If verification fails, retake the photos in good light.",
    "verify_my_identity": f"Verify your identity under Profile > Verify {APP}.",
    "verify_source_of_funds": "We may ask where your money comes from to meet the law.",
    "verify_top_up": "We may ask you to verify a top-up card with a small charge.",
    "virtual_card_not_working": "Check that your virtual card is not frozen or expired.",
    "why_verify_identity": "We verify identities to protect you and to comply with the law.",
    "wrong_amount_of_cash_received": "If an ATM gave the wrong amount, contact us with a receipt.",
    "wrong_exchange_rate_for_cash_withdrawal": "ATM withdrawals use the network's exchange rate.",
}

# Factual intents answered from the knowledge base instead of a template.
WITHOUT_TEMPLATE = (
    "age_limit",
    "country_support",
    "fiat_currency_support",
    "supported_cards_and_currencies",
    "visa_or_mastercard",
)

KNOWLEDGE_BASE: list[tuple[str, str, str, str]] = [
    # question, answer, source, intent ("" = about no intent of the classifier)
    ("How old do I have to be to open an account?",
     "You must be at least 18 to open an account; teen accounts start at 13.",
     "help/account/age", "age_limit"),
    ("Can my child have an account?",
     "Children from 13 to 17 can have a teen account linked to a parent.",
     "help/account/teen", "age_limit"),
    ("Which countries do you support?",
     "We open accounts for residents of the EEA, the UK, Switzerland and the US.",
     "help/account/countries", "country_support"),
    ("Can I use the account if I move abroad?",
     "Yes, within supported countries; update your address under Profile.",
     "help/account/moving", "country_support"),
    ("Which currencies can I hold?",
     "You can hold and exchange 30 currencies, including EUR, GBP, USD and CHF.",
     "help/currencies/list", "fiat_currency_support"),
    ("Do you support cryptocurrencies?",
     "No, we support only official (fiat) currencies.",
     "help/currencies/crypto", "fiat_currency_support"),
    ("Which cards can I use to top up?",
     "Top up with any Visa or Mastercard debit or credit card in a supported currency.",
     "help/top-up/cards", "supported_cards_and_currencies"),
    ("Can I top up with American Express?",
     "American Express cards are not supported for top-ups.",
     "help/top-up/amex", "supported_cards_and_currencies"),
    ("Is my card Visa or Mastercard?",
     "Cards issued in Europe are Mastercard; cards issued in the US are Visa.",
     "help/cards/network", "visa_or_mastercard"),
    ("Can I choose between Visa and Mastercard?",
     "No, the network depends on where the card is issued.",
     "help/cards/network-choice", "visa_or_mastercard"),
    ("My card has not arrived yet",
     "Cards arrive within 5 working days; track yours under Cards in the app.",
     "help/cards/delivery", "card_arrival"),
    ("How do I activate my new card?",
     "Open Cards in the app and tap Activate, or make one chip-and-PIN payment.",
     "help/cards/activate", "activate_my_card"),
    ("I lost my card, what should I do?",
     "Freeze the card in the app at once, then order a replacement.",
     "help/cards/lost", "lost_or_stolen_card"),
    ("My PIN is blocked",
     "Unblock your PIN at any ATM that offers PIN services.",
     "help/cards/pin-blocked", "pin_blocked"),
    ("How do I change my PIN?",
     "Change your PIN at any ATM that offers PIN services.",
     "help/cards/change-pin", "change_pin"),
    ("Why was my card payment declined?",
     "Payments are declined for low balance, a frozen card, or a security check.",
     "help/payments/declined", "declined_card_payment"),
    ("I was charged twice for the same payment",
     "The second charge is usually a pending authorisation that drops off within days.",
     "help/payments/double", "transaction_charged_twice"),
    ("How long does a bank transfer take?",
     "Most transfers arrive within 1 to 2 working days.",
     "help/transfers/timing", "transfer_timing"),
    ("Can I cancel a transfer?",
     "Pending transfers can be cancelled from Payments in the app.",
     "help/transfers/cancel", "cancel_transfer"),
    ("What exchange rate do you use?",
     "We use the interbank rate, shown in the app before you exchange.",
     "help/exchange/rate", "exchange_rate"),
    ("Is there a fee to withdraw cash?",
     "Withdrawals are free up to 200 EUR a month, then 2% per withdrawal.",
     "help/fees/atm", "cash_withdrawal_charge"),
    ("How do I close my account?",
     "Close it under Profile > Close account in the app, after emptying your balance.",
     "help/account/close", "terminate_account"),
    ("Why do you need to verify my identity?",
     "The law requires us to know our customers; it also protects your account.",
     "help/verify/why", "why_verify_identity"),
    ("How do I get a refund?",
     "Ask the merchant first; if they do not reply in 15 days, open a dispute with us.",
     "help/payments/refund", "request_refund"),
    ("How do I top up by bank transfer?",
     "Send money to the account details shown under Top up > Bank transfer.",
     "help/top-up/bank", "transfer_into_account"),
    ("What are your opening hours?",
     "The app and card services run around the clock; chat support answers 8:00 to 22:00.",
     "help/contact/hours", ""),
    ("Is my money protected?",
     "Deposits are protected up to 100,000 EUR by the deposit guarantee scheme.",
     "help/account/protection", ""),
    ("How do I contact support?",
     "Write to us from Help in the app; we answer in the order messages arrive.",
     "help/contact", ""),
    ("Do you offer loans or overdrafts?",
     "We offer no loans or overdrafts at the moment.",
     "help/products/credit", ""),
    ("Can I have a joint account?",
     "Joint accounts are not available yet.",
     "help/account/joint", ""),
]  # fmt: skip


def write(folder: Path, categories: Path | None = None) -> None:
    """Write both files into ``folder`` (checking intents against ``categories`` when given)."""
    known = set(json.loads(categories.read_text())) if categories else None
    templates = dict(TEMPLATES)
    if known is not None:
        unknown = sorted(set(templates) - known) + sorted(
            {i for *_, i in KNOWLEDGE_BASE if i} - known
        )
        if unknown:
            raise SystemExit(f"not Banking77 intents: {', '.join(unknown)}")
        missing = sorted(known - set(templates) - set(WITHOUT_TEMPLATE))
        if missing:
            raise SystemExit(f"intents with neither a template nor a KB route: {missing}")
    with (folder / "banking77-answers.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["intent", "answer"])
        writer.writerows(sorted(templates.items(), key=lambda item: item[0].lower()))
    with (folder / "knowledge-base.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["question", "answer", "source", "intent"])
        writer.writerows(KNOWLEDGE_BASE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=Path, help="Banking77 categories.json to check.")
    args = parser.parse_args()
    write(Path(__file__).resolve().parent, args.categories)
