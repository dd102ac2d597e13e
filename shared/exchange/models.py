"""Coinbase Advanced Trade request and response bodies; prices and sizes are Decimal, sent as strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator


def _blank_to_none(value: Any) -> Any:
    # Coinbase sends "" rather than null for numbers and times it has no value for (fee, last_fill_time, ...).
    return None if value == "" else value


Dec = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json")]
OptDec = Annotated[Dec | None, BeforeValidator(_blank_to_none)]
OptInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptTime = Annotated[datetime | None, BeforeValidator(_blank_to_none)]
Side = Literal["BUY", "SELL"]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Granularity(StrEnum):
    ONE_MINUTE = "ONE_MINUTE"
    FIVE_MINUTE = "FIVE_MINUTE"
    FIFTEEN_MINUTE = "FIFTEEN_MINUTE"
    THIRTY_MINUTE = "THIRTY_MINUTE"
    ONE_HOUR = "ONE_HOUR"
    TWO_HOUR = "TWO_HOUR"
    SIX_HOUR = "SIX_HOUR"
    ONE_DAY = "ONE_DAY"

    @property
    def seconds(self) -> int:
        """The length of one candle."""
        return GRANULARITY_SECONDS[self]


GRANULARITY_SECONDS = {
    Granularity.ONE_MINUTE: 60,
    Granularity.FIVE_MINUTE: 300,
    Granularity.FIFTEEN_MINUTE: 900,
    Granularity.THIRTY_MINUTE: 1800,
    Granularity.ONE_HOUR: 3600,
    Granularity.TWO_HOUR: 7200,
    Granularity.SIX_HOUR: 21600,
    Granularity.ONE_DAY: 86400,
}


class Product(Body):
    product_id: str
    product_type: str | None = None
    base_currency_id: str | None = None
    quote_currency_id: str | None = None
    display_name: str | None = None
    status: str | None = None
    price: OptDec = None
    price_percentage_change_24h: OptDec = None
    volume_24h: OptDec = None
    volume_percentage_change_24h: OptDec = None
    approximate_quote_24h_volume: OptDec = None
    mid_market_price: OptDec = None
    base_increment: OptDec = None
    quote_increment: OptDec = None
    price_increment: OptDec = None
    base_min_size: OptDec = None
    base_max_size: OptDec = None
    quote_min_size: OptDec = None
    quote_max_size: OptDec = None
    trading_disabled: bool = False
    is_disabled: bool = False
    cancel_only: bool = False
    limit_only: bool = False
    post_only: bool = False
    auction_mode: bool = False
    view_only: bool = False
    alias: str | None = None
    alias_to: list[str] = []


class Pagination(Body):
    next_cursor: str | None = None
    has_next: bool = False


class ProductsPage(Body):
    products: list[Product]
    num_products: int
    pagination: Pagination | None = None


class ProductListing(Body):
    """The product list as the exchange gave it: each product is read on its own (`read_products`), so one
    malformed product does not sink the others."""

    products: list[Any]


class Candle(Body):
    start: int
    low: Dec
    high: Dec
    open: Dec
    close: Dec
    volume: Dec


class CandlesPage(Body):
    candles: list[Candle]


class PriceLevel(Body):
    price: Dec
    size: Dec


class PriceBook(Body):
    product_id: str
    bids: list[PriceLevel]
    asks: list[PriceLevel]
    time: OptTime = None


class BestBidAsk(Body):
    pricebooks: list[PriceBook]


class Trade(Body):
    trade_id: str
    product_id: str
    price: Dec
    size: Dec
    time: datetime
    side: str
    exchange: str | None = None


class MarketTrades(Body):
    trades: list[Trade]
    best_bid: OptDec = None
    best_ask: OptDec = None


class ServerTime(Body):
    iso: datetime
    epoch_seconds: int = Field(alias="epochSeconds")
    epoch_millis: int = Field(alias="epochMillis")


class MarketIoc(Body):
    quote_size: OptDec = None
    base_size: OptDec = None


class LimitGtc(Body):
    base_size: Dec
    limit_price: Dec
    post_only: bool = False


class OrderConfiguration(Body):
    """The order type and its sizes; orders placed elsewhere may carry a variant not modelled here (all None)."""

    market_market_ioc: MarketIoc | None = None
    limit_limit_gtc: LimitGtc | None = None


class CreateOrderRequest(Body):
    client_order_id: str = Field(min_length=1)
    product_id: str = Field(min_length=1)
    side: Side
    order_configuration: OrderConfiguration

    # Checked on what we send only: answers about orders may carry other variants or both market sizes.
    @model_validator(mode="after")
    def _one_variant_one_size(self) -> CreateOrderRequest:
        market, limit = self.order_configuration.market_market_ioc, self.order_configuration.limit_limit_gtc
        if (market is None) == (limit is None):
            raise ValueError("order_configuration takes exactly one of market_market_ioc or limit_limit_gtc")
        if market is not None and (market.quote_size is None) == (market.base_size is None):
            raise ValueError("market_market_ioc takes exactly one of quote_size or base_size")
        return self


class SuccessResponse(Body):
    order_id: str
    product_id: str | None = None
    side: str | None = None
    client_order_id: str | None = None


class ErrorResponse(Body):
    error: str | None = None
    message: str | None = None
    error_details: str | None = None
    preview_failure_reason: str | None = None
    new_order_failure_reason: str | None = None


class CreateOrderResponse(Body):
    success: bool
    success_response: SuccessResponse | None = None
    error_response: ErrorResponse | None = None
    order_configuration: OrderConfiguration | None = None
    failure_reason: str | None = None


class EditHistory(Body):
    price: OptDec = None
    size: OptDec = None
    replace_accept_timestamp: OptTime = None


class Order(Body):
    order_id: str
    product_id: str
    side: str
    status: str
    client_order_id: str | None = None
    user_id: str | None = None
    order_configuration: OrderConfiguration | None = None
    time_in_force: str | None = None
    created_time: OptTime = None
    completion_percentage: OptDec = None
    filled_size: OptDec = None
    average_filled_price: OptDec = None
    fee: OptDec = None
    number_of_fills: OptInt = None
    filled_value: OptDec = None
    pending_cancel: bool = False
    size_in_quote: bool = False
    total_fees: OptDec = None
    size_inclusive_of_fees: bool = False
    total_value_after_fees: OptDec = None
    trigger_status: str | None = None
    order_type: str | None = None
    reject_reason: str | None = None
    settled: bool = False
    product_type: str | None = None
    reject_message: str | None = None
    cancel_message: str | None = None
    order_placement_source: str | None = None
    outstanding_hold_amount: OptDec = None
    is_liquidation: bool = False
    last_fill_time: OptTime = None
    edit_history: list[EditHistory] = []
    leverage: OptDec = None
    margin_type: str | None = None
    retail_portfolio_id: str | None = None
    originating_order_id: str | None = None
    attached_order_id: str | None = None


class OrderEnvelope(Body):
    order: Order


class CancelResult(Body):
    success: bool
    failure_reason: str | None = None
    order_id: str


class CancelResults(Body):
    results: list[CancelResult]


class OrdersPage(Body):
    orders: list[Order]
    has_next: bool = False
    cursor: str | None = None
    sequence: str | None = None


class Fill(Body):
    entry_id: str | None = None
    trade_id: str
    order_id: str
    trade_time: datetime
    trade_type: str | None = None
    price: Dec
    size: Dec
    commission: Dec
    product_id: str
    sequence_timestamp: OptTime = None
    liquidity_indicator: str | None = None
    size_in_quote: bool = False
    user_id: str | None = None
    side: str | None = None
    retail_portfolio_id: str | None = None

    @property
    def base_size(self) -> Decimal:
        """The amount filled in the base currency: Coinbase gives `size` in the quote currency when
        `size_in_quote` is true (an order sized by what it spends)."""
        return self.size / self.price if self.size_in_quote else self.size

    @property
    def quote_value(self) -> Decimal:
        """The fill's value in the quote currency, before fees."""
        return self.size if self.size_in_quote else self.size * self.price


class FillsPage(Body):
    fills: list[Fill]
    cursor: str | None = None


class Balance(Body):
    value: Dec
    currency: str


class Account(Body):
    uuid: str
    name: str | None = None
    currency: str
    available_balance: Balance
    hold: Balance | None = None
    default: bool = False
    active: bool = True
    type: str | None = None
    ready: bool = True
    created_at: OptTime = None
    updated_at: OptTime = None
    deleted_at: OptTime = None
    retail_portfolio_id: str | None = None
    platform: str | None = None


class AccountsPage(Body):
    accounts: list[Account]
    has_next: bool = False
    cursor: str | None = None
    size: OptInt = None
